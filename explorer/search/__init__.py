"""The search: `python -m explorer.search` (`cli`), what a run asks for (`settings`), one run of
it (`session`), creating and checking its study (`study`), successive halving's promotions
(`rungs`), what a worker runs next (`next_work`), one trial (`trial`), pre-screening with a proxy
(`prescreen`), the worker loop (`workers`) over the one work loop (`explorer.store.work`), several
worker processes (`processes`), the claims against v1/v2 retrained before they are stated
(`verification`), and what it prints (`report`).

May import: `explorer.evaluate` (the final seeds and the verification are re-evaluations),
`explorer.analysis`, `explorer.training`, `explorer.store`, `explorer.usage`, `search_space`.
"""

from ..store.stale import (
    MAX_ATTEMPTS,
)
from .cli import (
    build_parser,
    main,
    parse_settings,
)
from .next_work import (
    Claimer,
    Done,
    Wait,
)
from .report import (
    summary,
)
from .rungs import (
    DEFAULT_ETA,
    DEFAULT_RUNGS,
    fitting_rungs,
)
from .session import (
    final_seeds,
)
from .settings import (
    SearchSettings,
)
from .study import (
    COPIES_IN_A_ROW,
    new_config,
    open_search_study,
    out_of_new_designs,
    search_trials_taken,
)
from .verification import (
    DEFAULT_CAP,
    HELD,
    NOT_HELD,
    PLAN_ATTR,
    UNCHECKED,
    UNDECIDED,
    VERIFY_FACTOR,
    VERIFY_PREFIX,
    ClaimCheck,
    expected_run_s,
    race_plan,
    stored_plan,
    verification_budget_name,
    verified_claims,
    verify_budget,
)
from .workers import (
    run_worker,
)

__all__ = [
    "build_parser",
    "COPIES_IN_A_ROW",
    "ClaimCheck",
    "Claimer",
    "DEFAULT_CAP",
    "DEFAULT_ETA",
    "DEFAULT_RUNGS",
    "Done",
    "HELD",
    "MAX_ATTEMPTS",
    "NOT_HELD",
    "PLAN_ATTR",
    "SearchSettings",
    "UNCHECKED",
    "UNDECIDED",
    "VERIFY_FACTOR",
    "VERIFY_PREFIX",
    "Wait",
    "expected_run_s",
    "final_seeds",
    "fitting_rungs",
    "main",
    "new_config",
    "open_search_study",
    "out_of_new_designs",
    "parse_settings",
    "race_plan",
    "run_worker",
    "search_trials_taken",
    "stored_plan",
    "summary",
    "verification_budget_name",
    "verified_claims",
    "verify_budget",
]

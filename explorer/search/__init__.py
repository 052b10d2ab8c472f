"""The search: `python -m explorer.search` (`cli`), what a run asks for (`settings`), creating and
checking its study (`study`), successive halving's promotions (`rungs`), the claim a worker makes
one trial (`runner`), the worker loop (`workers`), several worker processes
(`processes`), dead workers' trials (`recovery`), the claims against v1/v2 retrained before they
are stated (`verification`), and what it prints (`report`).

May import: `explorer.evaluate` (the final seeds and the verification are re-evaluations), `explorer.analysis`,
`explorer.training`, `explorer.store`, `explorer.usage`, `search_space`.
"""

from .claims import (
    RECOVER_EVERY_S,
    Claim,
    Claimer,
    Done,
    Wait,
)
from .cli import (
    build_parser,
    config_args,
    final_seeds,
    main,
    parse_settings,
    run,
    search_unfinished,
    verify_claims,
)
from .processes import (
    plan,
    run_processes,
    write_traceback,
)
from .recovery import (
    MAX_ATTEMPTS,
    recover,
    retry,
)
from .report import (
    Progress,
    rungs_line,
    summary,
    trial_line,
)
from .rungs import (
    DEFAULT_ETA,
    DEFAULT_RUNGS,
    MIN_RUNG_IMAGES,
    MIN_TOP_DESIGNS,
    Promotion,
    create_lower_rungs,
    fitting_rungs,
    parents,
    promotable,
    promote,
    promotion_candidates,
)
from .runner import (
    PruneRule,
    TrialFailed,
    TrialRunner,
    TrialTakenOver,
    versions,
)
from .settings import (
    CONSTRAINTS,
    NEW_STUDY_DEFAULTS,
    SAMPLERS,
    SearchSettings,
)
from .study import (
    COPIES_IN_A_ROW,
    FINISHED,
    check_resume,
    enqueue_reference,
    make_sampler,
    new_config,
    open_search_study,
    out_of_new_designs,
    sampler_for,
    search_trials_taken,
)
from .verification import (
    VERIFY_FACTOR,
    VERIFY_PREFIX,
    VERIFY_SHARE,
    ClaimCheck,
    search_claims,
    verification_budget_name,
    verification_deadline,
    verified_claims,
    verify,
    verify_budget,
)
from .workers import (
    SEED_STRIDE,
    WAIT_S,
    FailureBound,
    Stopped,
    WorkerError,
    run_worker,
)

__all__ = [
    "CONSTRAINTS",
    "Claim",
    "ClaimCheck",
    "Claimer",
    "DEFAULT_ETA",
    "DEFAULT_RUNGS",
    "MIN_RUNG_IMAGES",
    "MIN_TOP_DESIGNS",
    "Done",
    "FINISHED",
    "FailureBound",
    "MAX_ATTEMPTS",
    "NEW_STUDY_DEFAULTS",
    "Progress",
    "Promotion",
    "PruneRule",
    "RECOVER_EVERY_S",
    "SAMPLERS",
    "SEED_STRIDE",
    "SearchSettings",
    "Stopped",
    "TrialFailed",
    "TrialRunner",
    "TrialTakenOver",
    "WAIT_S",
    "Wait",
    "WorkerError",
    "build_parser",
    "check_resume",
    "config_args",
    "create_lower_rungs",
    "fitting_rungs",
    "enqueue_reference",
    "final_seeds",
    "main",
    "make_sampler",
    "new_config",
    "open_search_study",
    "parents",
    "parse_settings",
    "plan",
    "promotable",
    "promote",
    "promotion_candidates",
    "recover",
    "retry",
    "run",
    "run_processes",
    "run_worker",
    "rungs_line",
    "sampler_for",
    "COPIES_IN_A_ROW",
    "out_of_new_designs",
    "search_trials_taken",
    "search_unfinished",
    "summary",
    "trial_line",
    "VERIFY_FACTOR",
    "VERIFY_PREFIX",
    "VERIFY_SHARE",
    "search_claims",
    "verification_budget_name",
    "verification_deadline",
    "verified_claims",
    "verify",
    "verify_budget",
    "verify_claims",
    "versions",
    "write_traceback",
]

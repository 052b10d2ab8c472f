"""The project's benchmarks, one tool: ``python -m bench NAME [args]`` from the repository root
(``python -m bench --help`` lists them). Each bench writes its results into a section of
BENCHMARKS.md that names the command which rewrites it; the helpers they share are in
`bench._common`."""

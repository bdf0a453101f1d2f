"""The application floor: one module per user-facing job (infer, mcmc, evaluate, train, export).

Each holds the job's orchestration as small functions with typed config and result dataclasses;
the click commands in ``cli/``, the benchmarks and other entry points only parse arguments and
call it.
"""

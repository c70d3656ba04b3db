"""Stage 5, actions: the registry of typed Kubernetes actions and the executor (dry-run, execute, verify,
roll back). The only package that imports ``kubernetes``. (Issue 8; not built yet.)"""

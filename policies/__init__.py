"""Stage 6, policies: the Rego policy engine, the default bundle, approvals and the hash-chained audit log. The
only package that imports ``regopy``. (Issue 8; not built yet.)"""

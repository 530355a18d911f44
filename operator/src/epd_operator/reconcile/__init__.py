"""One idempotent reconcile pass and the parts it is made of (docs/architecture.md, "One
reconcile pass"); `kube` is the only module with an API client."""

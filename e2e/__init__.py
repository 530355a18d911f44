"""End-to-end support: cluster providers (kwok, kind, existing), the dev command, e2e tests."""

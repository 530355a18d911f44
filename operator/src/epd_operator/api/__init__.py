"""The EPDCluster API: models (the schema), parse, constants, CEL and admission decisions;
pure (docs/architecture.md, "Layers of the operator")."""

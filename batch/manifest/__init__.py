"""YAML manifests and tables -> validated, frozen items."""

"""The one-step restorer (OSDFace formulation) and its loaders."""

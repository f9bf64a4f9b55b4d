"""What is kept on disk: workspaces and fitted scikit-learn models, without pickle."""

"""The interactive session's state (no Streamlit here): data, plan, run, jobs, workspaces, tabs."""

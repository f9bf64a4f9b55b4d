"""Report: explanation reports come from saved workspaces (wired in with the workspace feature)."""
import streamlit as st

st.title("Report")
st.info(
    "Reports (HTML and PDF: the accuracy matrices, capacity, timings and explanation heatmaps of a run) are "
    "built from a saved **workspace**. Saving workspaces and building reports from them is being added; this "
    "page will offer both once that feature is in place.",
    icon=":material/description:",
)
st.caption("Until then, every figure in the app can be saved as PNG from its toolbar, and the Recognize page "
           "exports its results as CSV.")

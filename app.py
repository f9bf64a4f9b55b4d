"""ReReLRP app: `streamlit run app.py` (or `make run`). Navigation and sidebar only; pages do the rest."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # AppTest does not put the app folder on sys.path; `pages.common` needs it
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages.common import PAGES, get_state, started_by  # noqa: E402
from rerelrp.run.jobs import phase_fraction  # noqa: E402
from rerelrp.text import md  # noqa: E402

st.set_page_config(page_title="ReReLRP", page_icon="🧠", layout="wide")

pages = [
    st.Page(PAGES["data"], title="Data", icon=":material/dataset:", default=True),
    st.Page(PAGES["train"], title="Train", icon=":material/model_training:"),
    st.Page(PAGES["explain"], title="Explain", icon=":material/visibility:"),
    st.Page(PAGES["capacity"], title="Capacity", icon=":material/memory:"),
    st.Page(PAGES["recognize"], title="Recognize", icon=":material/image_search:"),
    st.Page(PAGES["report"], title="Report", icon=":material/description:"),
    st.Page(PAGES["compare"], title="Compare", icon=":material/compare_arrows:"),
]
page = st.navigation(pages)
state = get_state()


@st.fragment(run_every=3.0 if state.busy else None)
def sidebar_status():
    st.markdown(f"**Device** \n{state.describe_device()}")
    learned, planned = state.n_learned, max(len(state.tasks), state.n_learned)
    st.markdown(f"**Run** \n{learned} of {planned} planned tasks learned")
    st.caption(f"{'Saved to workspace' if learned else 'Will save to'} {md(state.workspace.name)}")
    if state.busy:
        job = state.job.snapshot()
        event = job.events.get(job.phase)
        if state.job_kind == "compare":
            label = f"comparison: {len(job.results)} of {state.compare_total} runs done"
        else:
            label = f"task {job.task}: {job.phase}" if job.phase else "starting"
        st.progress(phase_fraction(event), text=label)
        st.caption(md(f"{state.job.name}, {started_by(state, state.job)}"))
        st.session_state["_sidebar_watch"] = True
    elif st.session_state.pop("_sidebar_watch", False):
        st.rerun()  # the job just ended: redraw the whole page with the new model
    elif state.job is not None and state.job.state in ("stopped", "failed"):
        st.caption(f"last job {state.job.state}")


with st.sidebar:
    st.markdown("### ReReLRP")
    st.caption("Continual learning that remembers and recognises tasks with LRP")
    sidebar_status()

page.run()

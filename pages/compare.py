"""Compare: ReReLRP beside fine-tuning, EWC, LwF, iCaRL, replay and joint training on the planned tasks."""
import pandas as pd
import streamlit as st

from pages.common import get_state, job_heading, plot, show_error
from rerelrp.errors import RerelrpError
from rerelrp.figures.plots import comparison_figure, memory_figure
from rerelrp.run.compare import HEADER, markdown, plan, table_rows
from rerelrp.run.jobs import phase_fraction
from rerelrp.run.method_run import ABLATION, EQUAL_BYTES, METHODS
from rerelrp.text import md

LIVE_REFRESH_S = 2.0
ABOUT = {
    "rerelrp": "ReReLRP: frozen LRP sub-networks, task recognisers",
    ABLATION: "ReReLRP's sub-networks, task of the most confident one (no recognisers)",
    "finetune": "fine-tuning: the lower bound",
    "ewc": "elastic weight consolidation (Kirkpatrick et al. 2017)",
    "lwf": "learning without forgetting (Li & Hoiem 2017)",
    "icarl": "iCaRL: herding exemplars, nearest mean (Rebuffi et al. 2017)",
    "replay": "experience replay of exemplars",
    EQUAL_BYTES: "replay with as many bytes of exemplars as ReReLRP's recognition store (needs rerelrp)",
    "joint": "joint training on every image seen: the upper bound",
}



def reused_note(result):
    """Which runs are the Train page's model, read rather than trained ("" if none)."""
    reused = [f"{r['method']} seed {r['seed']}" for r in result["runs"] if r.get("reused")]
    return (f" Read from the model trained on the Train page, not trained again: {', '.join(reused)} (its seconds "
            "are that training's).") if reused else ""


state = get_state()
st.title("Compare")
st.caption("Every method learns the planned task sequence with the same network, settings, training loop and "
           "test images, once per seed; the published model is not touched. When every planned task is learned, "
           "ReReLRP with the Train page's settings and seed is that model, read rather than trained again. "
           "Replay and iCaRL keep training images "
           "(exemplars); ReReLRP keeps relevance rows and no image. The task splits are the Data page's; the seed "
           "changes initialisation, batch order and sampling.")

tasks = state.tasks
busy = state.busy
if len(tasks) < 2:
    st.info("Plan at least two tasks on the Data page: a comparison is about what is forgotten.", icon=":material/info:")
else:
    st.markdown(f"**Task sequence:** {' → '.join(f'{i}: {md(t.name)}' for i, t in enumerate(tasks))} "
                f"(network {state.settings['net']}, {state.settings['epochs']} epochs, settings of the Train page)")
    with st.form("compare_form", border=True):
        chosen = st.multiselect("Methods", METHODS, default=[m for m in METHODS if m != EQUAL_BYTES],
                                format_func=lambda m: f"{m}: {ABOUT[m]}",
                                key="cmp_methods")
        c1, c2 = st.columns(2)
        seeds = c1.text_input("Seeds", "0,1,2", key="cmp_seeds", help="comma-separated; every method runs once per seed")
        exemplars = c2.number_input("Exemplars per class (replay, iCaRL)", 1, 10_000, 20, key="cmp_exemplars",
                                    help="Their memory: this many images per class of the whole sequence, held from "
                                         "the first task on and shared among the classes seen so far")
        run = st.form_submit_button("Run comparison", type="primary", icon=":material/compare_arrows:", disabled=busy)
    if run:
        try:
            state.start_compare(chosen, seeds, int(exemplars))
            st.rerun()
        except RerelrpError as exc:
            show_error(exc)


@st.fragment(run_every=LIVE_REFRESH_S if state.busy else None)
def live_progress():
    job = state.job
    if job is None or state.job_kind != "compare":
        if busy:
            st.caption(":material/hourglass_top: A task is training (Train page); a comparison can start when it ends.")
        return
    snap = job.snapshot()
    if snap.running:
        st.session_state["_cmp_watch"] = True
        with st.container(border=True):
            job_heading(state, job, snap, f"Comparing: {len(snap.results)} of {state.compare_total} runs done", "cmp",
                        "Stops between batches; finished runs are kept on this page")
            st.progress(len(snap.results) / max(1, state.compare_total), text="runs")
            current = snap.log[-1] if snap.log else "starting"
            event = snap.events.get(snap.phase)
            st.progress(phase_fraction(event), text=f"{md(current)}: {snap.phase or 'starting'} "
                                                    f"{event.message if event else ''}")
            if snap.results:
                st.dataframe(pd.DataFrame(table_rows({"methods": list(dict.fromkeys(r["method"] for r in snap.results)),
                                                      "runs": snap.results}), columns=HEADER), hide_index=True)
        return
    if st.session_state.pop("_cmp_watch", False):
        st.rerun()
    if snap.state == "stopped":
        st.warning(f"Stopped after {len(snap.results)} of {state.compare_total} runs. {md(snap.error)}.",
                   icon=":material/stop_circle:")
    elif snap.state == "failed":
        st.error(f"The comparison failed: {md(snap.error)}", icon=":material/error:")
        if snap.trace:
            with st.expander("Details"):
                st.code(snap.trace)


live_progress()

result = state.comparison
if result is not None and not busy:
    st.subheader("Result")
    done = f"{len(plan(result['methods'], result['seeds']))} runs"
    if result.get("stopped"):
        done = f"stopped: the runs finished before Stop ({len(result['runs'])} records)"
    st.caption(f"Mean ± sd over seeds {', '.join(map(str, result['seeds']))} on "
               f"{md(' → '.join(result['tasks']))}; {done}. "
               "Seconds per run include testing after every task; rerelrp-maxsoftmax reads rerelrp's model."
               + reused_note(result))
    st.dataframe(pd.DataFrame(table_rows(result), columns=HEADER), hide_index=True)
    plot(comparison_figure(result), key="cmp_figure")
    plot(memory_figure(result), key="cmp_memory")
    st.caption("Each method's final TAg against the bytes it keeps after the last task (points: seeds; large "
               "marker: their mean ± sd). Replay and iCaRL keep uint8 images, ReReLRP its recognition store.")
    import json

    c1, c2 = st.columns(2)
    c1.download_button("Download compare.json", json.dumps(result, indent=1), file_name="compare.json",
                       mime="application/json", icon=":material/download:", key="cmp_json")
    c2.download_button("Download table (markdown)", markdown(result), file_name="compare.md", mime="text/markdown",
                       icon=":material/download:", key="cmp_md")
    st.caption("Reports (Report page) include this table while this session lasts, and the workspace keeps it as "
               "compare.json once a task is learned.")

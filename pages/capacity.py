"""Capacity: which task keeps which units of every layer, what is free, and how that evolved."""
import pandas as pd
import streamlit as st

from pages.common import model_page, plot, task_names
from rerelrp.figures.plots import capacity_figure, capacity_history_figure
from rerelrp.report.content import growth

state = model_page(
    "Capacity",
    "Every task keeps (and freezes) the units it needs; later tasks may read them but never change them. "
    "Free units are what later tasks can still learn with.",
    "Capacity is shown",
)

learner = state.learner
rows = learner.capacity()
names = task_names(state)
min_free = learner.min_free
low = [r for r in rows if r["free_share"] < min_free]

total = sum(r["units"] for r in rows)
free = sum(r["free"] for r in rows)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Units", f"{total:,}")
m2.metric("Free", f"{free:,} ({free / max(1, total):.0%})")
m3.metric("Shared by several tasks", f"{sum(r['shared'] for r in rows):,}")
m4.metric("Layers under min free", f"{len(low)} of {len(rows)}",
          help=f"Layers whose free share is below the minimum free share ({min_free:.0%})")

if low:
    fix = ("they grow before the next task" if learner.grow
           else "growth is off: later tasks can only reuse the frozen units there")
    lines = "\n".join(f"- **{r['layer']}**: {r['free']} of {r['units']} units free ({r['free_share']:.0%})" for r in low)
    st.warning(f"{len(low)} layer(s) below the minimum free share of {min_free:.0%}; {fix}.\n{lines}",
               icon=":material/warning:")

plot(capacity_figure(rows, names, min_free=min_free,
                     title=f"Units per layer after task {learner.n_tasks - 1}: first kept by each task, then free"),
     key="capacity")

history = state.run.metrics.capacity
if len(history) > 1:
    plot(capacity_history_figure(history, names, min_free=min_free), key="capacity_history")
else:
    st.info("How capacity evolves appears after the second task.", icon=":material/timeline:")
table = pd.DataFrame([
    {"layer": r["layer"], "units": r["units"],
     **{f"kept by {t}": r["kept_by_task"][t] for t in range(len(names))},
     "shared": r["shared"], "free": r["free"], "free %": round(100 * r["free_share"], 1)}
    for r in rows
])
st.dataframe(table, hide_index=True, width="stretch")
st.caption("A unit one task kept can be kept again by later tasks (read, never changed): **shared** counts such units, "
           "so the **kept by** columns add up to more than the layer's units. The bars count each unit once, for the "
           "task that kept it first.")
st.caption(growth([h.grown for h in learner.history_], [h.prune.get("room") for h in learner.history_])
           or "No layer has grown so far.")

"""Figures and display images of a run: pure functions, data in, plotly figure or uint8 image out (app and reports)."""

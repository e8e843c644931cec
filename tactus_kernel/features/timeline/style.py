"""How the live view looks and when it draws: its pace, its icons, labels
and colours. Read by the view (view.py); a module of its own so that the
trail (trail.py), which the view reads, holds only what a run recorded."""

INTERVAL = 0.1  # seconds between two redraws of the view (<= 10 updates/s)
SHOW_AFTER = 0.3  # seconds a cell's procedures run before the view appears
MAX_ROWS = 40  # rows drawn (the newest); the record keeps every event

TICK = 1.0  # seconds between two redraws while nothing changes but the clock (a card waiting)

ICONS = {"running": "›", "waiting": "?", "completed": "✓", "failed": "✗", "replayed": "↺", "cancelled": "⊘"}
LABELS = {
    "running": "running",
    "waiting": "waiting for a human",
    "completed": "done",
    "failed": "failed",
    "replayed": "replayed from record",
    "cancelled": "cancelled",
}
# JupyterLab's theme variables (light, dark and high-contrast themes read
# well), with fallbacks for pages without them (GitHub, nbviewer).
MUTED = "var(--jp-ui-font-color2, #57606a)"
COLORS = {
    "running": "var(--jp-brand-color1, #1976d2)",
    "waiting": "var(--jp-warn-color1, #b7791f)",
    "completed": "var(--jp-success-color1, #2f855a)",
    "failed": "var(--jp-error-color1, #c53030)",
    "replayed": MUTED,
    "cancelled": MUTED,
}
BOX = (
    "font-family:var(--jp-ui-font-family, system-ui, -apple-system, sans-serif);"
    "font-size:var(--jp-ui-font-size1, 13px);color:var(--jp-ui-font-color1, #1f2328);"
    "border:1px solid var(--jp-border-color2, #d0d7de);border-radius:4px;"
    "background:var(--jp-layout-color1, #ffffff);padding:4px 8px;margin:4px 0"
)

"""What a plan does for a name (plan.py decides it): the state read says it per name, the
controller's preview and checks read it; here alone so that they need not import the planning."""

IN_SYNC, REPAIR, INSTALL, RESTART, REFUSE = "in sync", "repair", "install", "restart", "refuse"
HOLD = "held for DANE"  # a key change waits for its TLSA record (dane.py); mox keeps its files

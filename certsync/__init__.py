"""certsync: keep the TLS certificates mox serves equal to the ones Caddy obtained, on every host
of a pyinfra inventory.

    from certsync.deploy import certsync_deploy
    certsync_deploy()                      # settings from host data (certsync_names, ...)

`certsync.host` is the program the hosts run (standard library only); the rest is the
controller's: settings from pyinfra data (`hostdata`), the state fact (`facts`), the `synced`
operation (`operations`), the `@deploy` (`deploy`) and the status report (`status`).
"""

from flows import heartbeat

heartbeat.install()

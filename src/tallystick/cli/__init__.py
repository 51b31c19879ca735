"""The tallystick command line. Needs the ``[server]`` extra."""

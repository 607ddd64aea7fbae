"""The teleop node's web side: HTTPS/WSS server, WebXR page, operator screen."""

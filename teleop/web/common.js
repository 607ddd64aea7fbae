// Shared by the operator screen and the WebXR page: websocket with reconnect, camera frames.
"use strict";
const HIL = {};
HIL.connect = function (path, { onStatus, onFrame, onOpen, onClose }) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let ws = null;
  const open = () => {
    ws = new WebSocket(`${proto}//${location.host}${path}${location.search}`);  // carries ?token=
    ws.binaryType = "arraybuffer";
    ws.onopen = () => onOpen && onOpen(ws);
    ws.onclose = () => { onClose && onClose(); setTimeout(open, 500); };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        const msg = JSON.parse(ev.data);
        if (msg.type === "status" && onStatus) onStatus(msg);
      } else if (onFrame) {
        const bytes = new Uint8Array(ev.data);
        const n = bytes[0];
        const name = new TextDecoder().decode(bytes.subarray(1, 1 + n));
        onFrame(name, new Blob([bytes.subarray(1 + n)], { type: "image/jpeg" }));
      }
    };
  };
  open();
  return { send: (obj) => ws && ws.readyState === 1 && ws.send(JSON.stringify(obj)), get socket() { return ws; } };
};
HIL.showFrame = function (container, name, blob) {
  let fig = container.querySelector(`figure[data-camera="${name}"]`);
  if (!fig) {
    fig = document.createElement("figure");
    fig.dataset.camera = name;
    fig.innerHTML = `<img alt="${name} camera"><figcaption>${name}</figcaption>`;
    container.appendChild(fig);
  }
  const img = fig.querySelector("img");
  const old = img.src;
  img.src = URL.createObjectURL(blob);
  if (old) URL.revokeObjectURL(old);
};

// Web worker that owns the headset's WSS link, so pose messages leave at once even while the page's
// main thread is busy rendering the frame. Main -> worker: a JSON string to send. Worker -> main:
// {kind: "open" | "close"} | {kind: "text", data} | {kind: "binary", data: ArrayBuffer}.
"use strict";
let ws = null;
function open() {
  const proto = self.location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${self.location.host}/ws/xr${self.location.search}`);  // carries ?token=
  ws.binaryType = "arraybuffer";
  ws.onopen = () => postMessage({ kind: "open" });
  ws.onclose = () => { postMessage({ kind: "close" }); setTimeout(open, 500); };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") postMessage({ kind: "text", data: ev.data });
    else postMessage({ kind: "binary", data: ev.data }, [ev.data]);
  };
}
onmessage = (ev) => {
  if (ws && ws.readyState === 1 && ws.bufferedAmount < 65536) ws.send(ev.data);
};
open();

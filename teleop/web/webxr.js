// WebXR page: immersive-vr session, streams controller poses/buttons every XR frame over WSS and
// shows the robot camera on a panel in front of the operator. Works on a real headset (Quest
// browser) and under an emulated runtime in tests; nothing here knows which.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let seq = 0;
  let cameraBitmap = null;
  let cameraDirty = false;
  const showFrame = (name, blob) => {
    HIL.showFrame($("cameras"), name, blob);
    if (name === (window.HIL_XR_CAMERA || "front") || !cameraBitmap) {
      createImageBitmap(blob).then((b) => { cameraBitmap = b; cameraDirty = true; }).catch(() => {});
    }
  };
  // the WSS link lives in a worker: pose messages leave at once even while this thread renders
  let linkOpen = false;
  const link = new Worker(`/static/xr_link.js${location.search}`);
  link.onmessage = (ev) => {
    const m = ev.data;
    if (m.kind === "open") { linkOpen = true; $("conn").textContent = "connected"; $("conn").className = "pill ok"; }
    else if (m.kind === "close") { linkOpen = false; $("conn").textContent = "disconnected"; $("conn").className = "pill bad"; }
    else if (m.kind === "text") {
      const s = JSON.parse(m.data);
      if (s.type === "status") { $("mode").textContent = s.mode; $("segment").textContent = s.segment; }
    } else if (m.kind === "binary") {
      const bytes = new Uint8Array(m.data), n = bytes[0];
      showFrame(new TextDecoder().decode(bytes.subarray(1, 1 + n)), new Blob([bytes.subarray(1 + n)], { type: "image/jpeg" }));
    }
  };

  const pose7 = (p) => {
    if (!p) return null;
    const t = p.transform, q = t.orientation, v = t.position;
    return [v.x, v.y, v.z, q.w, q.x, q.y, q.z];
  };

  // ---- minimal WebGL: one textured quad (the camera feed) 1.2 m ahead at eye height
  let gl = null, prog = null, tex = null, buf = null;
  const VS = `attribute vec3 p; attribute vec2 uv; uniform mat4 proj, view; varying vec2 vUv;
    void main(){ vUv = uv; gl_Position = proj * view * vec4(p, 1.0); }`;
  const FS = `precision mediump float; uniform sampler2D img; varying vec2 vUv;
    void main(){ gl_FragColor = texture2D(img, vUv); }`;
  function initGL() {
    const sh = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; };
    prog = gl.createProgram();
    gl.attachShader(prog, sh(gl.VERTEX_SHADER, VS));
    gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog);
    const w = 0.4, h = 0.3, z = -1.2, y = 1.4;
    buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([
      -w, y - h, z, 0, 1,  w, y - h, z, 1, 1,  -w, y + h, z, 0, 0,  w, y + h, z, 1, 0]), gl.STATIC_DRAW);
    tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, 1, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array([40, 40, 40, 255]));
  }
  function draw(frame, refSpace, viewerPose) {
    const layer = frame.session.renderState.baseLayer;
    if (!gl || !layer) return;
    gl.bindFramebuffer(gl.FRAMEBUFFER, layer.framebuffer);
    gl.clearColor(0.05, 0.05, 0.08, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!viewerPose) return;
    if (cameraDirty && cameraBitmap) {
      gl.bindTexture(gl.TEXTURE_2D, tex);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, cameraBitmap);
      cameraDirty = false;
    }
    gl.useProgram(prog);
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    const pl = gl.getAttribLocation(prog, "p"), ul = gl.getAttribLocation(prog, "uv");
    gl.enableVertexAttribArray(pl); gl.vertexAttribPointer(pl, 3, gl.FLOAT, false, 20, 0);
    gl.enableVertexAttribArray(ul); gl.vertexAttribPointer(ul, 2, gl.FLOAT, false, 20, 12);
    for (const view of viewerPose.views) {
      const vp = layer.getViewport(view);
      gl.viewport(vp.x, vp.y, vp.width, vp.height);
      gl.uniformMatrix4fv(gl.getUniformLocation(prog, "proj"), false, view.projectionMatrix);
      gl.uniformMatrix4fv(gl.getUniformLocation(prog, "view"), false, view.transform.inverse.matrix);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    }
  }

  function onFrame(t, frame) {
    const session = frame.session;
    session.requestAnimationFrame(onFrame);
    const refSpace = session.hilRefSpace;
    const tMs = performance.timeOrigin + performance.now();
    const controllers = {};
    for (const src of session.inputSources) {
      if (!src.gamepad || (src.handedness !== "left" && src.handedness !== "right")) continue;
      const grip = src.gripSpace ? frame.getPose(src.gripSpace, refSpace) : null;
      const aim = frame.getPose(src.targetRaySpace, refSpace);
      controllers[src.handedness] = {
        grip: grip ? pose7(grip) : null,
        tracked: !!grip && !grip.emulatedPosition,  // inferred (not optically tracked) positions drift
        aim: pose7(aim),
        buttons: Array.from(src.gamepad.buttons, (b) => [b.pressed, b.value]),
        axes: Array.from(src.gamepad.axes),
      };
    }
    if (linkOpen) {
      link.postMessage(JSON.stringify({ type: "xr", seq: seq++, t_ms: tMs, frame_t: t, controllers }));
      $("sent").textContent = seq;
    }
    draw(frame, refSpace, frame.getViewerPose(refSpace));
  }

  async function enterVR() {
    try {
      const session = await navigator.xr.requestSession("immersive-vr", { optionalFeatures: ["local-floor"] });
      const canvas = document.createElement("canvas");
      gl = canvas.getContext("webgl", { xrCompatible: true });
      if (gl) {
        initGL();
        // the panel shows a low-resolution camera feed: half-resolution eye buffers lose nothing and
        // halve the fill work (battery on a headset; CPU under software GL)
        session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl, { framebufferScaleFactor: 0.5 }) });
      } else {
        $("error").textContent = "WebGL unavailable: streaming controllers without the camera panel";
      }
      try { session.hilRefSpace = await session.requestReferenceSpace("local-floor"); }
      catch (e) { session.hilRefSpace = await session.requestReferenceSpace("local"); }
      session.addEventListener("end", () => { $("enter-vr").disabled = false; document.body.dataset.xr = "ended"; });
      session.requestAnimationFrame(onFrame);
      document.body.dataset.xr = "running";
      $("enter-vr").disabled = true;
    } catch (e) {
      $("error").textContent = `could not start VR: ${e.message || e}`;
    }
  }

  async function init() {
    if (!navigator.xr) { $("error").textContent = "WebXR is not available (needs HTTPS and a VR browser)"; return; }
    const ok = await navigator.xr.isSessionSupported("immersive-vr").catch(() => false);
    if (!ok) { $("error").textContent = "this browser/device cannot start immersive-vr"; return; }
    $("enter-vr").disabled = false;
    $("enter-vr").addEventListener("click", enterVR);
    document.body.dataset.ready = "1";
  }
  init();
})();

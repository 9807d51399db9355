// The page: loads tha.json and the student graph, runs it with ONNX Runtime Web (WebGPU, or
// WebAssembly), and draws each frame. Pose sources: sliders, the idle animator, the webcam.
//
// Test hook (for tests and embedders): window.tha.ready resolves once the first frame is
// drawn; window.tha.render(pose45) resolves to the model's RGBA output (base64, 512x512x4)
// for that pose; window.tha.lastFrame() gives the drawn frame's {pose, rgba} (the canvas holds
// premultiplied alpha, so reading it back would lose precision); window.tha.setPose(pose45)
// shows a pose with the sliders; window.tha.state() gives {backend, source, fps, frames,
// message, pose, tracked}; window.tha.posesFromLandmarks(...) runs the webcam conversion (and
// One Euro smoothing) on given landmarks. URL parameters: ?source=sliders starts on the
// sliders (still until moved), ?backend=wasm skips WebGPU.
import * as ort from './vendor/ort/ort.webgpu.min.mjs';
import { Puppet } from './puppet.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const SIZE = 512;
const NO_FACE_MS = 2000;
const NO_FACE = 'No face found in the camera: face it in good light; the character idles meanwhile.';

const state = {
  backend: '', source: params.get('source') === 'sliders' ? 'sliders' : 'animator',
  fps: 0, frames: 0, message: '', pose: null, tracked: null,
};

function say(message) {
  state.message = message;
  $('message').textContent = message;
  $('message').hidden = !message;
}

async function loadJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// WebGPU where the browser has an adapter (fp16 graph with shader-f16), else WebAssembly.
async function openSession(site) {
  ort.env.wasm.wasmPaths = new URL('vendor/ort/', location.href).href;
  ort.env.logLevel = 'error'; // ORT prints its warnings (e.g. shape ops kept on the CPU) as console errors
  let why = '';
  if (params.get('backend') !== 'wasm') {
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
    if (adapter) {
      const half = adapter.features.has('shader-f16');
      try {
        const session = await ort.InferenceSession.create(half ? site.graphs.fp16 : site.graphs.fp32,
          { executionProviders: ['webgpu'], logSeverityLevel: 3 });
        return { session, label: `WebGPU (${half ? 'fp16' : 'fp32'})` };
      } catch (err) {
        why = `WebGPU failed (${String(err.message || err).split('\n')[0]})`;
      }
    } else {
      why = navigator.gpu ? 'no WebGPU adapter here' : 'this browser has no WebGPU';
    }
  }
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = true; // inference in a worker: the page and the face tracker stay responsive
  const session = await ort.InferenceSession.create(site.graphs.fp32, { executionProviders: ['wasm'], logSeverityLevel: 3 });
  const isolation = self.crossOriginIsolated ? '' : ', page not cross-origin isolated';
  let label = `WebAssembly (SIMD, ${threads} thread${threads > 1 ? 's' : ''}${isolation})`;
  if (why) label += ` - ${why}, fell back to WebAssembly`;
  return { session, label };
}

// The idle animator (tha.runtime.sources.animator): eases to the emotion's pose, blinks,
// breathes and sways, with the settings from tha.json.
class Animator {
  constructor(site) {
    const a = site.animator;
    this.s = a.settings;
    this.index = Object.fromEntries(site.pose.map((p) => [p.name, p.index]));
    this.blink = a.blink.map((n) => this.index[n]);
    this.breathing = this.index[a.breathing];
    this.sway = a.sway.map((n) => this.index[n]);
    this.swayScale = a.sway_scale;
    this.emotions = site.emotions;
    this.emotion = 'neutral';
    this.base = Float32Array.from(this.emotions.neutral);
    this.start = this.last = null;
    this.micro = [0, 1].map(() => this.sway.map(() => Math.random() * 2 * Math.PI));
  }

  read(now) {
    const s = this.s;
    if (this.start === null) {
      this.start = this.last = now;
      this.nextBlink = now + this.uniform(s.blink_interval_min, s.blink_interval_max);
      this.blinkStart = -1;
      this.swayFrom = this.sway.map(() => 0);
      this.swayTo = this.sway.map(() => 0);
      this.swayStart = this.swayEnd = now;
    }
    const dt = Math.max(0, now - this.last);
    this.last = now;
    const target = this.emotions[this.emotion];
    const k = s.transition_time <= 0 ? 1 : 1 - Math.exp(-dt / s.transition_time);
    const pose = this.base.map((v, i) => v + (target[i] - v) * k);
    this.base = Float32Array.from(pose);
    const sway = this.swayOffsets(now);
    this.sway.forEach((i, j) => { pose[i] += sway[j]; });
    pose[this.breathing] = s.breathing_strength * 0.5 * (1 - Math.cos(2 * Math.PI * (now - this.start) / s.breathing_cycle_duration));
    const blink = this.blinkAmount(now);
    this.blink.forEach((i) => { pose[i] = Math.max(pose[i], blink); });
    return pose;
  }

  uniform(lo, hi) { return lo + (hi - lo) * Math.random(); }

  blinkAmount(now) {
    const s = this.s;
    if (now >= this.nextBlink) {
      this.blinkStart = this.nextBlink;
      this.nextBlink += s.blink_duration + this.uniform(s.blink_interval_min, s.blink_interval_max);
    }
    const phase = (now - this.blinkStart) / Math.max(s.blink_duration, 1e-6);
    return phase >= 0 && phase <= 1 ? s.blink_strength * Math.sin(Math.PI * phase) : 0;
  }

  swayOffsets(now) {
    const s = this.s;
    while (now >= this.swayEnd) {
      this.swayFrom = this.swayTo;
      this.swayTo = this.sway.map(() => this.uniform(-1, 1));
      this.swayStart = this.swayEnd;
      this.swayEnd += this.uniform(Math.max(s.sway_interval_min, 1e-3), s.sway_interval_max);
    }
    const x = Math.min(1, Math.max(0, (now - this.swayStart) / (this.swayEnd - this.swayStart)));
    const k = x * x * (3 - 2 * x);
    const w = (2 * Math.PI) / Math.max(s.sway_micro_period, 1e-3);
    const t = now - this.start;
    return this.sway.map((_, j) => {
      const macro = (this.swayFrom[j] + (this.swayTo[j] - this.swayFrom[j]) * k) * s.sway_macro_strength;
      const micro = 0.5 * s.sway_micro_strength * (Math.sin(w * t + this.micro[0][j]) + Math.sin(0.447 * w * t + this.micro[1][j]));
      return (macro + micro) * this.swayScale[j];
    });
  }
}

// Sliders grouped as in the viewer: chooser panels pick one group, then its left/right values.
function buildSliders(site, currentPose, onChange) {
  const byName = Object.fromEntries(site.pose.map((p) => [p.name, p]));
  const inputs = {};
  const panel = $('sliders');
  // A linked left/right pair moves together, as the viewer's "link" toggle does.
  const twin = (name) => (name.endsWith('_left') ? name.replace(/_left$/, '_right')
    : name.endsWith('_right') ? name.replace(/_right$/, '_left') : null);
  const linked = {};
  const move = (name, value, category) => {
    onChange(name, value);
    const other = twin(name);
    if (linked[category] && other && inputs[other]) {
      inputs[other].value = value;
      onChange(other, value);
    }
  };
  const slider = (name, label, category) => {
    const p = byName[name];
    const row = document.createElement('label');
    row.className = 'slider';
    row.textContent = label;
    const input = Object.assign(document.createElement('input'),
      { type: 'range', min: p.lower, max: p.upper, step: 0.001, value: currentPose()[p.index] });
    input.dataset.name = name;
    input.addEventListener('input', () => move(name, Number(input.value), category));
    inputs[name] = input;
    row.append(input);
    return row;
  };
  for (const group of site.panels) {
    const box = document.createElement('details');
    box.open = true;
    box.innerHTML = `<summary>${group.title}</summary>`;
    if (group.groups.some((g) => g.parameters.length === 2)) {
      const link = Object.assign(document.createElement('input'), { type: 'checkbox', checked: true });
      linked[group.category] = true;
      link.addEventListener('change', () => { linked[group.category] = link.checked; });
      const label = document.createElement('label');
      label.append(link, ' link left and right');
      box.append(label);
    }
    if (group.chooser) {
      const select = document.createElement('select');
      select.dataset.panel = group.category;
      const body = document.createElement('div');
      const show = () => {
        body.replaceChildren(...group.groups[select.selectedIndex].parameters
          .map((n) => slider(n, n.endsWith('_left') ? 'left' : n.endsWith('_right') ? 'right' : 'value', group.category)));
      };
      for (const g of group.groups) select.append(new Option(g.name.replace(`${group.category}_`, ''), g.name));
      select.addEventListener('change', show);
      box.append(select, body);
      show();
    } else {
      for (const g of group.groups) for (const n of g.parameters) box.append(slider(n, n, group.category));
    }
    panel.append(box);
  }
  return () => {
    for (const [name, input] of Object.entries(inputs)) input.value = currentPose()[byName[name].index];
  };
}

async function main() {
  const site = await loadJson('tha.json');
  const { session, label } = await openSession(site);
  state.backend = label;
  $('backend').textContent = label;
  const animator = new Animator(site);
  const puppet = new Puppet(site);
  let manual = Float32Array.from(site.emotions.neutral);
  let tracked = null;
  const refreshSliders = buildSliders(site, () => manual, (name, value) => {
    manual[site.pose.find((p) => p.name === name).index] = value;
    setSource('sliders');
  });

  const canvas = $('canvas');
  const context = canvas.getContext('2d');
  const image = context.createImageData(SIZE, SIZE);
  let queue = Promise.resolve();
  const exclusive = (job) => { queue = queue.then(job, job); return queue; };
  const infer = async (pose) => {
    const out = await session.run({ pose: new ort.Tensor('float32', Float32Array.from(pose), [1, pose.length]) });
    return out.rgba.data;
  };

  function setSource(source) {
    state.source = source;
    $('source').value = source;
    if (source !== 'webcam' && state.message === NO_FACE) say(''); // only true while on the webcam
  }
  setSource(state.source);

  // Emotion presets drive the animator; with the sliders they set the sliders.
  for (const name of Object.keys(site.emotions)) $('emotion').append(new Option(name, name));
  $('emotion').value = 'neutral';
  $('emotion').addEventListener('change', () => {
    animator.emotion = $('emotion').value;
    if (state.source === 'sliders') {
      manual = Float32Array.from(site.emotions[animator.emotion]);
      refreshSliders();
    }
  });
  $('background').addEventListener('change', () => { $('stage').dataset.background = $('background').value; });
  $('source').addEventListener('change', () => {
    if ($('source').value === 'webcam') startWebcam();
    else setSource($('source').value);
  });
  $('calibrate').addEventListener('click', () => puppet.requestCalibration());

  // The webcam: getUserMedia -> MediaPipe FaceMesh (vendored, model inside) -> Puppet.
  const video = $('video');
  let faceMesh = null;
  let faceMissingSince = null; // performance.now() of the first result without a face, else null
  async function startWebcam() {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
      await video.play();
    } catch (err) {
      setSource('animator');
      say(err.name === 'NotAllowedError'
        ? 'Camera permission was refused: allow the camera for this page in the browser\'s site settings, then choose Webcam again.'
        : `No camera could be opened (${err.name}: ${err.message}).`);
      return;
    }
    faceMissingSince = null;
    if (!faceMesh) {
      faceMesh = new self.FaceMesh({ locateFile: (file) => `vendor/face_mesh/${file}` });
      faceMesh.setOptions({ maxNumFaces: 1, refineLandmarks: true, minDetectionConfidence: 0.5, minTrackingConfidence: 0.5 });
      faceMesh.onResults((results) => {
        const faces = results.multiFaceLandmarks || [];
        noteFace(faces.length > 0);
        if (!faces.length) return;
        const landmarks = faces[0].map((m) => [m.x, m.y, m.z]);
        tracked = puppet.convert(landmarks, video.videoWidth, video.videoHeight, performance.now() / 1000);
        state.tracked = Array.from(tracked);
      });
      await faceMesh.initialize();
      track();
    }
    say('');
    setSource('webcam');
  }

  // A camera that opens but shows no face would otherwise look like a page that ignores the
  // webcam: after NO_FACE_MS of results without a face, say so and let the animator take over;
  // the message goes as soon as a face is tracked again.
  function noteFace(found) {
    const now = performance.now();
    if (found) {
      faceMissingSince = null;
      if (state.message === NO_FACE) say('');
      return;
    }
    faceMissingSince ??= now;
    if (state.source !== 'webcam' || now - faceMissingSince < NO_FACE_MS) return;
    tracked = null; // idle rather than freeze on the last face seen
    state.tracked = null;
    if (!state.message) say(NO_FACE);
  }

  // Tracking runs at the camera's pace, apart from the (slower) renders.
  async function track() {
    if (state.source === 'webcam' && video.readyState >= 2) await faceMesh.send({ image: video });
    requestAnimationFrame(track);
  }

  function currentPose(now) {
    if (state.source === 'webcam') return tracked || animator.read(now);
    if (state.source === 'animator') return animator.read(now);
    return manual;
  }

  // The fps readout counts only time spent producing frames: the window opens when a frame
  // starts after the loop was idle (a still slider pose), and closes after a second of frames
  // or when the loop goes idle again. The first frame (model warm-up) is left out.
  let windowStart = null;
  let windowFrames = 0;
  function publishFps(now) {
    if (windowFrames > 0) {
      state.fps = (windowFrames * 1000) / Math.max(now - windowStart, 1);
      $('fps').textContent = `${state.fps.toFixed(1)} fps`;
    }
    windowStart = null;
    windowFrames = 0;
  }
  function countFrame(now) {
    if (state.frames === 1) { windowStart = null; return; } // warm-up, not the steady rate
    windowFrames += 1;
    if (now - windowStart >= 1000) publishFps(now);
  }

  let resolveReady;
  const ready = new Promise((resolve) => { resolveReady = resolve; });
  const unchanged = (pose) => state.pose !== null && pose.every((v, i) => v === state.pose[i]);
  async function frame() {
    const pose = currentPose(performance.now() / 1000);
    if (state.source === 'sliders' && unchanged(pose)) { // a still pose is drawn once, not every frame
      if (windowStart !== null) publishFps(performance.now()); // idle time is not frame time
      requestAnimationFrame(frame);
      return;
    }
    windowStart ??= performance.now();
    const rgba = await exclusive(() => infer(pose));
    image.data.set(rgba);
    context.putImageData(image, 0, 0);
    state.pose = Array.from(pose);
    state.frames += 1;
    countFrame(performance.now());
    resolveReady();
    requestAnimationFrame(frame);
  }

  const toBase64 = (bytes) => {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
  Object.assign(window.tha, {
    ready,
    state: () => ({ ...state }),
    render: async (pose) => toBase64(await exclusive(() => infer(pose))),
    lastFrame: () => ({ pose: state.pose, rgba: toBase64(image.data) }),
    setPose: (pose) => { manual = Float32Array.from(pose); refreshSliders(); setSource('sliders'); },
    // frames: [[landmarks, t seconds], ...] through one puppet (One Euro smoothed when t is given).
    posesFromLandmarks: (frames, width, height) => {
      const p = new Puppet(site);
      return frames.map(([landmarks, t]) => Array.from(p.convert(landmarks, width, height, t ?? undefined)));
    },
  });
  requestAnimationFrame(frame);
}

window.tha = {};
window.tha.started = main().catch((err) => {
  say(`The page could not start: ${err.message || err}`);
  console.error(err);
  throw err;
});

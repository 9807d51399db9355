// The webcam puppeteer: MediaPipe FaceMesh landmarks -> ARKit-style face -> 45-d pose ->
// One Euro filter. A line-for-line port of tha.runtime.sources.webcam.face_state_from_landmarks
// and tha.runtime.sources.arkit (map_face, relative_to_neutral, ArkitConverter) and
// tha.runtime.sources.filters.OneEuroFilter; every index, scale and setting comes from
// tha.json, which `tha export --web` generates from those modules.

const clip = (x, lo = 0, hi = 1) => Math.min(hi, Math.max(lo, x));
const ramp = (x, lo, hi) => (hi <= lo ? 0 : clip((x - lo) / (hi - lo)));
const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
const mid = (a, b) => [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2];
const unit = (a) => scale(a, 1 / Math.max(Math.hypot(a[0], a[1], a[2]), 1e-9));
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const deg = (r) => (r * 180) / Math.PI;

// (478,3) normalised landmarks -> {shapes, head: [pitch, yaw, roll] degrees} (webcam.py).
export function faceFromLandmarks(landmarks, width, height, fm) {
  const pts = landmarks.map(([x, y, z]) => [x * width, -y * height, -z * width]);
  const R = fm.right_eye;
  const L = fm.left_eye;
  const ax = unit(sub(mid(pts[L.outer], pts[L.inner]), mid(pts[R.outer], pts[R.inner])));
  const up = sub(pts[fm.forehead], pts[fm.chin]);
  const ay = unit(sub(up, scale(ax, dot(up, ax))));
  const az = cross(ax, ay);
  const origin = mid(pts[R.outer], pts[L.outer]);
  const local = (k) => { const d = sub(pts[k], origin); return [dot(d, ax), dot(d, ay), dot(d, az)]; };
  const eyeDistance = Math.hypot(...sub(local(L.outer), local(R.outer)));
  const s = {};
  for (const [side, eye] of [['Right', R], ['Left', L]]) {
    const outer = local(eye.outer);
    const inner = local(eye.inner);
    const eyeWidth = Math.max(Math.hypot(inner[0] - outer[0], inner[1] - outer[1]), 1e-6);
    const opening = (local(eye.upper)[1] - local(eye.lower)[1]) / eyeWidth;
    s[`eyeBlink${side}`] = 1 - ramp(opening, fm.eye_closed, fm.eye_open);
    s[`eyeWide${side}`] = ramp(opening, fm.eye_open, fm.eye_wide);
    const centre = mid(outer, inner);
    const iris = local(eye.iris);
    const inward = [inner[0] - outer[0], inner[1] - outer[1]];
    const n = Math.max(Math.hypot(inward[0], inward[1]), 1e-9);
    const towardsNose = ((iris[0] - centre[0]) * inward[0] + (iris[1] - centre[1]) * inward[1]) / n / eyeWidth;
    const rise = (iris[1] - centre[1]) / eyeWidth - fm.iris_rest_rise;
    s[`eyeLookIn${side}`] = ramp(towardsNose, 0, fm.iris_range);
    s[`eyeLookOut${side}`] = ramp(-towardsNose, 0, fm.iris_range);
    s[`eyeLookUp${side}`] = ramp(rise, 0, fm.iris_range);
    s[`eyeLookDown${side}`] = ramp(-rise, 0, fm.iris_range);
    const brow = (local(eye.brow)[1] - centre[1]) / eyeDistance;
    s[`browOuterUp${side}`] = ramp(brow, fm.brow_rest, fm.brow_rest + fm.brow_range);
    s[`browDown${side}`] = ramp(-brow, -fm.brow_rest, -fm.brow_rest + fm.brow_range);
  }
  s.browInnerUp = (s.browOuterUpLeft + s.browOuterUpRight) / 2;
  const upper = local(fm.lip_upper);
  const lower = local(fm.lip_lower);
  s.jawOpen = ramp((upper[1] - lower[1]) / eyeDistance, 0, fm.mouth_open_full);
  const ml = local(fm.mouth_left);
  const mr = local(fm.mouth_right);
  const mouthWidth = Math.hypot(ml[0] - mr[0], ml[1] - mr[1]) / eyeDistance;
  const narrow = ramp(-mouthWidth, -fm.mouth_width_rest, -fm.mouth_width_rest + fm.mouth_width_range);
  s.mouthPucker = s.mouthFunnel = narrow;
  const wide = ramp(mouthWidth, fm.mouth_width_rest, fm.mouth_width_rest + fm.mouth_width_range);
  const lipMiddle = (upper[1] + lower[1]) / 2;
  for (const [side, corner] of [['Right', mr], ['Left', ml]]) {
    const lift = (corner[1] - lipMiddle) / eyeDistance;
    s[`mouthSmile${side}`] = ramp(lift, fm.smile_start, fm.smile_full);
    s[`mouthFrown${side}`] = ramp(-lift, fm.smile_start, fm.smile_full);
    s[`mouthStretch${side}`] = wide;
  }
  // Rotation matrix with columns ax, ay, az read as R = Rz(roll) Ry(yaw) Rx(pitch).
  const pitch = deg(Math.atan2(ay[2], az[2]));
  const yaw = deg(Math.asin(clip(-ax[2], -1, 1)));
  const roll = deg(Math.atan2(ax[1], ax[0]));
  return { shapes: s, head: [pitch - fm.pitch_bias, yaw, roll] };
}

// The face as a change from the calibrated rest face (arkit.relative_to_neutral).
function relativeToNeutral(face, c) {
  const shapes = {};
  for (const [name, value] of Object.entries(face.shapes)) {
    const rest = c.neutral_blendshapes[name] || 0;
    shapes[name] = rest < 1 ? clip((value - rest) / (1 - rest)) : 0;
  }
  return { shapes, head: face.head.map((a, i) => a - c.neutral_head[i]) };
}

// arkit.map_face: a calibrated face -> pose (before gain/offset).
function mapFace(face, c, index, neutral) {
  const pose = Float32Array.from(neutral);
  const put = (name, v) => { pose[index[name]] = v; };
  const f = (name) => face.shapes[name] || 0;
  const smile = (f('mouthSmileLeft') + f('mouthSmileRight')) / 2;
  const smiling = ramp(smile, c.smile_min, c.smile_max);
  for (const [side, ak] of [['left', 'Left'], ['right', 'Right']]) {
    put(`eyebrow_raised_${side}`, clip(f('browInnerUp') + f(`browOuterUp${ak}`)));
    put(`eyebrow_${c.eyebrow_down_mode}_${side}`, (1 - smiling) * ramp(f(`browDown${ak}`), 0, c.brow_down_max));
    put(`eyebrow_happy_${side}`, clip(smile) * smiling);
    put(`eye_surprised_${side}`, ramp(f(`eyeWide${ak}`), 0, c.eye_wide_max));
    const blink = ramp(f(`eyeBlink${ak}`), 0, c.blink_max);
    put(`eye_${c.wink_mode}_${side}`, (1 - smiling) * blink);
    put(`eye_happy_wink_${side}`, smiling * blink);
    put(`eye_raised_lower_eyelid_${side}`, ramp(f(`cheekSquint${ak}`), c.cheek_squint_min, c.cheek_squint_max));
    put(`iris_small_${side}`, c.iris_small);
  }
  const lookUp = f('eyeLookUpLeft') + f('eyeLookUpRight') - f('eyeLookDownLeft') - f('eyeLookDownRight');
  const lookSide = f('eyeLookInLeft') - f('eyeLookOutLeft') - f('eyeLookInRight') + f('eyeLookOutRight');
  put('iris_rotation_x', clip((lookUp / 2) * c.iris_gain, -1, 1));
  put('iris_rotation_y', clip((lookSide / 2) * c.iris_gain, -1, 1));
  const [pitch, yaw, roll] = face.head;
  const headY = clip(-yaw / c.head_range[1], -1, 1);
  const neckZ = clip(roll / c.head_range[2], -1, 1);
  put('head_x', clip(-pitch / c.head_range[0], -1, 1));
  put('head_y', headY);
  put('neck_z', neckZ);
  put('body_y', clip(c.body_follow * headY, -1, 1));
  put('body_z', clip(c.body_follow * neckZ, -1, 1));
  const opened = ramp(f('jawOpen'), c.jaw_open_min, c.jaw_open_max);
  const rounded = ramp(Math.max(f('mouthFunnel'), f('mouthPucker')), c.mouth_round_min, c.mouth_round_max);
  const stretched = ramp((f('mouthStretchLeft') + f('mouthStretchRight')) / 2, 0, c.mouth_stretch_max);
  put('mouth_aaa', opened * (1 - rounded));
  put('mouth_ooo', opened * rounded);
  put('mouth_uuu', (1 - opened) * rounded);
  put('mouth_iii', (1 - opened) * (1 - rounded) * stretched);
  const frown = ramp((f('mouthFrownLeft') + f('mouthFrownRight')) / 2, 0, c.mouth_frown_max);
  for (const side of ['left', 'right']) {
    put(`mouth_raised_corner_${side}`, clip(smile));
    put(`mouth_lowered_corner_${side}`, (1 - opened) * frown);
  }
  return pose;
}

// filters.OneEuroFilter, one state per pose slot.
export class OneEuro {
  constructor(settings) { this.s = settings; this.reset(); }
  reset() { this.x = null; this.dx = null; this.t = null; }
  static alpha(cutoff, dt) { const tau = 1 / (2 * Math.PI * cutoff); return 1 / (1 + tau / dt); }
  filter(x, t) {
    if (this.x === null || t <= this.t) {
      if (this.x === null) { this.x = Float64Array.from(x); this.dx = new Float64Array(x.length); this.t = t; }
      return Float32Array.from(this.x);
    }
    const dt = t - this.t;
    const ad = OneEuro.alpha(this.s.derivative_cutoff, dt);
    for (let i = 0; i < x.length; i++) {
      this.dx[i] += ad * ((x[i] - this.x[i]) / dt - this.dx[i]);
      const cutoff = this.s.min_cutoff + this.s.beta * Math.abs(this.dx[i]);
      this.x[i] += OneEuro.alpha(cutoff, dt) * (x[i] - this.x[i]);
    }
    this.t = t;
    return Float32Array.from(this.x);
  }
}

// arkit.ArkitConverter: mapping, gain/offset, clipping, smoothing, calibration.
export class Puppet {
  constructor(site) {
    this.site = site;
    this.c = structuredClone(site.converter);
    this.index = Object.fromEntries(site.pose.map((p) => [p.name, p.index]));
    this.neutral = site.pose.map((p) => p.default);
    this.filter = new OneEuro(site.one_euro);
    this.calibration = null;
  }

  requestCalibration(frames = 15) { this.calibration = { faces: [], frames }; }

  // Mapping (with breathing at time t, when given: tracking sees none) + gain/offset + clipping.
  rawPose(face, t) {
    const pose = mapFace(relativeToNeutral(face, this.c), this.c, this.index, this.neutral);
    const cycle = this.c.breathing_cycle_duration;
    if (t != null && cycle > 0) pose[this.index.breathing] = 0.5 * (1 - Math.cos(2 * Math.PI * t / cycle));
    for (const [name, g] of Object.entries(this.c.gain)) pose[this.index[name]] *= g;
    for (const [name, o] of Object.entries(this.c.offset)) pose[this.index[name]] += o;
    this.site.pose.forEach((p) => { pose[p.index] = clip(pose[p.index], p.lower, p.upper); });
    return pose;
  }

  // Landmarks ([x,y,z] normalised) seen at time t (seconds) -> smoothed pose; without t, unsmoothed.
  convert(landmarks, width, height, t) {
    const face = faceFromLandmarks(landmarks, width, height, this.site.facemesh);
    if (this.calibration) {
      this.calibration.faces.push(face);
      if (this.calibration.faces.length >= this.calibration.frames) this.setNeutral(this.calibration.faces);
    }
    const pose = this.rawPose(face, t);
    return t === undefined ? pose : this.filter.filter(pose, t);
  }

  setNeutral(faces) {
    const names = new Set(faces.flatMap((f) => Object.keys(f.shapes)));
    const shapes = {};
    for (const n of names) {
      const mean = faces.reduce((a, f) => a + (f.shapes[n] || 0), 0) / faces.length;
      if (mean > 0) shapes[n] = mean;
    }
    this.c.neutral_blendshapes = shapes;
    this.c.neutral_head = [0, 1, 2].map((i) => faces.reduce((a, f) => a + f.head[i], 0) / faces.length);
    this.calibration = null;
    this.filter.reset();
  }
}

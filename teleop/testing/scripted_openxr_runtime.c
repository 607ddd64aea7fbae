/* A scripted OpenXR runtime for tests: the real OpenXR loader loads it (XR_RUNTIME_JSON) and
 * applications talk to it through the normal API. It offers XR_MND_headless, one HMD system with
 * two Touch-style controllers, and plays back controller states from a text file
 * ($HIL_XR_SCRIPT), one sample per line:
 *
 *   t_s hand valid x y z qw qx qy qz trigger squeeze primary secondary stick_click stick_x stick_y
 *
 * t_s counts from xrBeginSession; hand is "left" or "right"; at each xrSyncActions the latest line
 * per hand with t_s <= now is current. $HIL_XR_NO_HEADLESS hides XR_MND_headless. Only what a headless teleop client needs is implemented;
 * everything else reports XR_ERROR_FUNCTION_UNSUPPORTED. Build: gcc -shared -fPIC -O2 -o lib.so this.c
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openxr/openxr.h>

/* Loader <-> runtime negotiation (OpenXR loader specification; not in the distro's public headers). */
typedef enum { LOADER_INFO = 1, RUNTIME_REQUEST = 3 } XrLoaderInterfaceStructs;
typedef struct { XrLoaderInterfaceStructs structType; uint32_t structVersion; size_t structSize;
  uint32_t minInterfaceVersion, maxInterfaceVersion; XrVersion minApiVersion, maxApiVersion; } XrNegotiateLoaderInfo;
typedef struct { XrLoaderInterfaceStructs structType; uint32_t structVersion; size_t structSize;
  uint32_t runtimeInterfaceVersion; XrVersion runtimeApiVersion; PFN_xrGetInstanceProcAddr getInstanceProcAddr; } XrNegotiateRuntimeRequest;

#define EXPORT __attribute__((visibility("default")))
#define MAX_PATHS 256
#define MAX_SAMPLES 100000
#define MAX_BINDINGS 64
enum { C_NONE, C_GRIP, C_AIM, C_TRIGGER, C_SQUEEZE, C_PRIMARY, C_SECONDARY, C_STICK_CLICK, C_STICK };

typedef struct { double t; int hand; int valid; XrPosef pose; float trigger, squeeze; int primary, secondary, click; float sx, sy; } Sample;
typedef struct { XrActionType type; char name[XR_MAX_ACTION_NAME_SIZE]; } Action;
typedef struct { Action *action; int component; int hand; } Binding;
typedef struct { int kind; int hand; int component; XrPosef offset; } Space; /* kind 0 reference, 1 action */
typedef struct { int headless; } Instance;
typedef struct { int state; int running; int64_t t0_ns; int attached; } Session;

static char *g_paths[MAX_PATHS];
static int g_npaths;
static Sample *g_samples;
static int g_nsamples;
static Sample g_current[2];
static Binding g_bindings[MAX_BINDINGS];
static int g_nbindings;
static Session *g_session;
static XrEventDataSessionStateChanged g_events[16];
static int g_nevents;
static int64_t g_next_frame_ns;

static int64_t now_ns(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec; }

static void load_script(void) {
  const char *path = getenv("HIL_XR_SCRIPT");
  g_nsamples = 0;
  if (!path) return;
  FILE *f = fopen(path, "r");
  if (!f) return;
  if (!g_samples) g_samples = calloc(MAX_SAMPLES, sizeof(Sample));
  char hand[16];
  Sample s;
  while (g_nsamples < MAX_SAMPLES &&
         fscanf(f, "%lf %15s %d %f %f %f %f %f %f %f %f %f %d %d %d %f %f", &s.t, hand, &s.valid,
                &s.pose.position.x, &s.pose.position.y, &s.pose.position.z, &s.pose.orientation.w,
                &s.pose.orientation.x, &s.pose.orientation.y, &s.pose.orientation.z, &s.trigger, &s.squeeze,
                &s.primary, &s.secondary, &s.click, &s.sx, &s.sy) == 17) {
    s.hand = strcmp(hand, "left") == 0 ? 0 : 1;
    g_samples[g_nsamples++] = s;
  }
  fclose(f);
}

static void push_state(XrSessionState st) {
  if (g_nevents >= 16 || !g_session) return;
  XrEventDataSessionStateChanged *e = &g_events[g_nevents++];
  memset(e, 0, sizeof(*e));
  e->type = XR_TYPE_EVENT_DATA_SESSION_STATE_CHANGED;
  e->session = (XrSession)g_session;
  e->state = st;
  e->time = now_ns();
  g_session->state = st;
}

/* ---------------------------------------------------------------- pose math */
static XrQuaternionf qmul(XrQuaternionf a, XrQuaternionf b) {
  XrQuaternionf r = { a.w * b.x + a.x * b.w + a.y * b.z - a.z * b.y, a.w * b.y - a.x * b.z + a.y * b.w + a.z * b.x,
                      a.w * b.z + a.x * b.y - a.y * b.x + a.z * b.w, a.w * b.w - a.x * b.x - a.y * b.y - a.z * b.z };
  return r;
}
static XrVector3f qrot(XrQuaternionf q, XrVector3f v) {
  XrQuaternionf p = { v.x, v.y, v.z, 0 }, c = { -q.x, -q.y, -q.z, q.w };
  XrQuaternionf r = qmul(qmul(q, p), c);
  XrVector3f o = { r.x, r.y, r.z };
  return o;
}
static XrPosef compose(XrPosef a, XrPosef b) { /* a then b in a's frame */
  XrPosef r; XrVector3f t = qrot(a.orientation, b.position);
  r.orientation = qmul(a.orientation, b.orientation);
  r.position.x = a.position.x + t.x; r.position.y = a.position.y + t.y; r.position.z = a.position.z + t.z;
  return r;
}
static XrPosef inverse(XrPosef a) {
  XrPosef r; r.orientation.x = -a.orientation.x; r.orientation.y = -a.orientation.y; r.orientation.z = -a.orientation.z;
  r.orientation.w = a.orientation.w;
  XrVector3f t = qrot(r.orientation, a.position);
  r.position.x = -t.x; r.position.y = -t.y; r.position.z = -t.z;
  return r;
}

/* ---------------------------------------------------------------- instance, system */
static XrResult XRAPI_CALL enumExt(const char *layer, uint32_t cap, uint32_t *count, XrExtensionProperties *props) {
  (void)layer;
  *count = getenv("HIL_XR_NO_HEADLESS") ? 0 : 1; /* tests: a runtime that needs a graphics binding */
  if (cap == 0) return XR_SUCCESS;
  if (cap < 1) return XR_ERROR_SIZE_INSUFFICIENT;
  strncpy(props[0].extensionName, XR_MND_HEADLESS_EXTENSION_NAME, XR_MAX_EXTENSION_NAME_SIZE);
  props[0].extensionVersion = 2;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL createInstance(const XrInstanceCreateInfo *info, XrInstance *out) {
  Instance *inst = calloc(1, sizeof(Instance));
  for (uint32_t i = 0; i < info->enabledExtensionCount; i++) {
    if (strcmp(info->enabledExtensionNames[i], XR_MND_HEADLESS_EXTENSION_NAME) == 0) inst->headless = 1;
    else { free(inst); return XR_ERROR_EXTENSION_NOT_PRESENT; }
  }
  load_script();
  memset(g_current, 0, sizeof(g_current));
  g_nbindings = 0;
  *out = (XrInstance)inst;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL destroyInstance(XrInstance i) { free((void *)i); return XR_SUCCESS; }
static XrResult XRAPI_CALL getInstanceProperties(XrInstance i, XrInstanceProperties *p) {
  (void)i; p->runtimeVersion = XR_MAKE_VERSION(0, 1, 0);
  strncpy(p->runtimeName, "hil_robot scripted runtime", XR_MAX_RUNTIME_NAME_SIZE);
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL getSystem(XrInstance i, const XrSystemGetInfo *info, XrSystemId *id) {
  (void)i;
  if (info->formFactor != XR_FORM_FACTOR_HEAD_MOUNTED_DISPLAY) return XR_ERROR_FORM_FACTOR_UNSUPPORTED;
  *id = 1;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL getSystemProperties(XrInstance i, XrSystemId id, XrSystemProperties *p) {
  (void)i; p->systemId = id; p->vendorId = 0;
  strncpy(p->systemName, "scripted headset", XR_MAX_SYSTEM_NAME_SIZE);
  p->trackingProperties.orientationTracking = XR_TRUE; p->trackingProperties.positionTracking = XR_TRUE;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL pollEvent(XrInstance i, XrEventDataBuffer *buf) {
  (void)i;
  if (g_nevents == 0) return XR_EVENT_UNAVAILABLE;
  memcpy(buf, &g_events[0], sizeof(g_events[0]));
  memmove(g_events, g_events + 1, sizeof(g_events[0]) * (size_t)(--g_nevents));
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL resultToString(XrInstance i, XrResult r, char buf[XR_MAX_RESULT_STRING_SIZE]) {
  (void)i; snprintf(buf, XR_MAX_RESULT_STRING_SIZE, "XR_RESULT_%d", (int)r); return XR_SUCCESS;
}
static XrResult XRAPI_CALL typeToString(XrInstance i, XrStructureType t, char buf[XR_MAX_STRUCTURE_NAME_SIZE]) {
  (void)i; snprintf(buf, XR_MAX_STRUCTURE_NAME_SIZE, "XR_STRUCTURE_TYPE_%d", (int)t); return XR_SUCCESS;
}
static XrResult XRAPI_CALL stringToPath(XrInstance i, const char *s, XrPath *out) {
  (void)i;
  for (int k = 0; k < g_npaths; k++) if (strcmp(g_paths[k], s) == 0) { *out = (XrPath)(k + 1); return XR_SUCCESS; }
  if (g_npaths >= MAX_PATHS || s[0] != '/') return XR_ERROR_PATH_FORMAT_INVALID;
  g_paths[g_npaths] = strdup(s);
  *out = (XrPath)(++g_npaths);
  return XR_SUCCESS;
}
static const char *path_str(XrPath p) { return (p >= 1 && p <= (XrPath)g_npaths) ? g_paths[p - 1] : ""; }
static XrResult XRAPI_CALL pathToString(XrInstance i, XrPath p, uint32_t cap, uint32_t *count, char *buf) {
  (void)i;
  const char *s = path_str(p);
  if (!*s) return XR_ERROR_PATH_INVALID;
  *count = (uint32_t)strlen(s) + 1;
  if (cap == 0) return XR_SUCCESS;
  if (cap < *count) return XR_ERROR_SIZE_INSUFFICIENT;
  memcpy(buf, s, *count);
  return XR_SUCCESS;
}
static int hand_of(XrPath p) {
  const char *s = path_str(p);
  if (strncmp(s, "/user/hand/left", 15) == 0) return 0;
  if (strncmp(s, "/user/hand/right", 16) == 0) return 1;
  return -1;
}

/* ---------------------------------------------------------------- actions */
static XrResult XRAPI_CALL createActionSet(XrInstance i, const XrActionSetCreateInfo *info, XrActionSet *out) {
  (void)i; (void)info; *out = (XrActionSet)calloc(1, 8); return XR_SUCCESS;
}
static XrResult XRAPI_CALL destroyActionSet(XrActionSet s) { free((void *)s); return XR_SUCCESS; }
static XrResult XRAPI_CALL createAction(XrActionSet s, const XrActionCreateInfo *info, XrAction *out) {
  (void)s;
  Action *a = calloc(1, sizeof(Action));
  a->type = info->actionType;
  snprintf(a->name, sizeof(a->name), "%s", info->actionName);
  *out = (XrAction)a;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL destroyAction(XrAction a) { free((void *)a); return XR_SUCCESS; }
static int component_of(const char *s) {
  const char *in = strstr(s, "/input/");
  if (!in) return C_NONE;
  in += 7;
  if (!strcmp(in, "grip/pose")) return C_GRIP;
  if (!strcmp(in, "aim/pose")) return C_AIM;
  if (!strncmp(in, "trigger", 7) || !strcmp(in, "select/click")) return C_TRIGGER;
  if (!strncmp(in, "squeeze", 7)) return C_SQUEEZE;
  if (!strcmp(in, "a/click") || !strcmp(in, "x/click")) return C_PRIMARY;
  if (!strcmp(in, "b/click") || !strcmp(in, "y/click")) return C_SECONDARY;
  if (!strcmp(in, "thumbstick/click")) return C_STICK_CLICK;
  if (!strcmp(in, "thumbstick")) return C_STICK;
  return C_NONE;
}
static XrResult XRAPI_CALL suggestBindings(XrInstance i, const XrInteractionProfileSuggestedBinding *b) {
  (void)i;
  if (strcmp(path_str(b->interactionProfile), "/interaction_profiles/oculus/touch_controller") != 0) return XR_SUCCESS;
  for (uint32_t k = 0; k < b->countSuggestedBindings && g_nbindings < MAX_BINDINGS; k++) {
    const char *s = path_str(b->suggestedBindings[k].binding);
    int c = component_of(s), h = hand_of(b->suggestedBindings[k].binding);
    if (c == C_NONE || h < 0) return XR_ERROR_PATH_UNSUPPORTED;
    g_bindings[g_nbindings++] = (Binding){ (Action *)b->suggestedBindings[k].action, c, h };
  }
  return XR_SUCCESS;
}
static int bound(XrAction a, int hand) {
  for (int k = 0; k < g_nbindings; k++)
    if (g_bindings[k].action == (Action *)a && (hand < 0 || g_bindings[k].hand == hand)) return g_bindings[k].component;
  return C_NONE;
}

/* ---------------------------------------------------------------- session, frames */
static XrResult XRAPI_CALL createSession(XrInstance i, const XrSessionCreateInfo *info, XrSession *out) {
  Instance *inst = (Instance *)i;
  if (!inst->headless && info->next == NULL) return XR_ERROR_GRAPHICS_DEVICE_INVALID;
  if (g_session) return XR_ERROR_LIMIT_REACHED;
  g_session = calloc(1, sizeof(Session));
  g_nevents = 0;
  push_state(XR_SESSION_STATE_IDLE);
  push_state(XR_SESSION_STATE_READY);
  *out = (XrSession)g_session;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL destroySession(XrSession s) { free((void *)s); g_session = NULL; return XR_SUCCESS; }
static XrResult XRAPI_CALL beginSession(XrSession s, const XrSessionBeginInfo *info) {
  (void)info; Session *ss = (Session *)s;
  if (ss->running) return XR_ERROR_SESSION_RUNNING;
  ss->running = 1; ss->t0_ns = now_ns(); g_next_frame_ns = ss->t0_ns;
  push_state(XR_SESSION_STATE_SYNCHRONIZED); push_state(XR_SESSION_STATE_VISIBLE); push_state(XR_SESSION_STATE_FOCUSED);
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL requestExit(XrSession s) {
  (void)s; push_state(XR_SESSION_STATE_VISIBLE); push_state(XR_SESSION_STATE_SYNCHRONIZED); push_state(XR_SESSION_STATE_STOPPING);
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL endSession(XrSession s) {
  Session *ss = (Session *)s;
  if (!ss->running) return XR_ERROR_SESSION_NOT_RUNNING;
  ss->running = 0; push_state(XR_SESSION_STATE_IDLE); push_state(XR_SESSION_STATE_EXITING);
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL waitFrame(XrSession s, const XrFrameWaitInfo *w, XrFrameState *st) {
  (void)w; Session *ss = (Session *)s;
  if (!ss->running) return XR_ERROR_SESSION_NOT_RUNNING;
  const int64_t period = 11111111; /* 90 Hz */
  int64_t n = now_ns();
  if (g_next_frame_ns > n) { struct timespec ts = { 0, (long)(g_next_frame_ns - n) }; nanosleep(&ts, NULL); }
  else g_next_frame_ns = n;
  g_next_frame_ns += period;
  st->predictedDisplayTime = g_next_frame_ns; st->predictedDisplayPeriod = period; st->shouldRender = XR_FALSE;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL beginFrame(XrSession s, const XrFrameBeginInfo *b) { (void)b; return ((Session *)s)->running ? XR_SUCCESS : XR_ERROR_SESSION_NOT_RUNNING; }
static XrResult XRAPI_CALL endFrame(XrSession s, const XrFrameEndInfo *e) {
  if (!((Session *)s)->running) return XR_ERROR_SESSION_NOT_RUNNING;
  return e->layerCount == 0 ? XR_SUCCESS : XR_ERROR_LAYER_INVALID; /* headless: nothing to show */
}
static XrResult XRAPI_CALL attachActionSets(XrSession s, const XrSessionActionSetsAttachInfo *i) {
  (void)i; Session *ss = (Session *)s;
  if (ss->attached) return XR_ERROR_ACTIONSETS_ALREADY_ATTACHED;
  ss->attached = 1; return XR_SUCCESS;
}
static XrResult XRAPI_CALL syncActions(XrSession s, const XrActionsSyncInfo *i) {
  (void)i; Session *ss = (Session *)s;
  if (ss->state != XR_SESSION_STATE_FOCUSED) return XR_SESSION_NOT_FOCUSED;
  double t = (double)(now_ns() - ss->t0_ns) * 1e-9;
  for (int k = 0; k < g_nsamples && g_samples[k].t <= t; k++) g_current[g_samples[k].hand] = g_samples[k];
  return XR_SUCCESS;
}
static int focused(void) { return g_session && g_session->state == XR_SESSION_STATE_FOCUSED; }
static int hand_req(XrPath sub) { return sub == XR_NULL_PATH ? 1 : hand_of(sub); }
static XrResult XRAPI_CALL stateBool(XrSession s, const XrActionStateGetInfo *gi, XrActionStateBoolean *st) {
  (void)s; int h = hand_req(gi->subactionPath), c = bound(gi->action, h); Sample *m = &g_current[h < 0 ? 1 : h];
  st->isActive = focused() && c != C_NONE; st->changedSinceLastSync = XR_FALSE; st->lastChangeTime = 0;
  st->currentState = st->isActive && ((c == C_PRIMARY && m->primary) || (c == C_SECONDARY && m->secondary) ||
                                      (c == C_STICK_CLICK && m->click) || (c == C_TRIGGER && m->trigger > 0.5f));
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL stateFloat(XrSession s, const XrActionStateGetInfo *gi, XrActionStateFloat *st) {
  (void)s; int h = hand_req(gi->subactionPath), c = bound(gi->action, h); Sample *m = &g_current[h < 0 ? 1 : h];
  st->isActive = focused() && c != C_NONE; st->changedSinceLastSync = XR_FALSE; st->lastChangeTime = 0;
  st->currentState = !st->isActive ? 0.f : c == C_TRIGGER ? m->trigger : c == C_SQUEEZE ? m->squeeze : 0.f;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL stateVec2(XrSession s, const XrActionStateGetInfo *gi, XrActionStateVector2f *st) {
  (void)s; int h = hand_req(gi->subactionPath), c = bound(gi->action, h); Sample *m = &g_current[h < 0 ? 1 : h];
  st->isActive = focused() && c == C_STICK; st->changedSinceLastSync = XR_FALSE; st->lastChangeTime = 0;
  st->currentState.x = st->isActive ? m->sx : 0.f; st->currentState.y = st->isActive ? m->sy : 0.f;
  return XR_SUCCESS;
}
static XrResult XRAPI_CALL statePose(XrSession s, const XrActionStateGetInfo *gi, XrActionStatePose *st) {
  (void)s; int h = hand_req(gi->subactionPath); st->isActive = focused() && bound(gi->action, h) != C_NONE; return XR_SUCCESS;
}

/* ---------------------------------------------------------------- spaces */
static XrResult XRAPI_CALL createRefSpace(XrSession s, const XrReferenceSpaceCreateInfo *i, XrSpace *out) {
  (void)s; Space *sp = calloc(1, sizeof(Space)); sp->kind = 0; sp->offset = i->poseInReferenceSpace; *out = (XrSpace)sp; return XR_SUCCESS;
}
static XrResult XRAPI_CALL createActionSpace(XrSession s, const XrActionSpaceCreateInfo *i, XrSpace *out) {
  (void)s; int h = hand_req(i->subactionPath), c = bound(i->action, h);
  if (h < 0) return XR_ERROR_PATH_UNSUPPORTED;
  Space *sp = calloc(1, sizeof(Space)); sp->kind = 1; sp->hand = h; sp->component = c; sp->offset = i->poseInActionSpace;
  *out = (XrSpace)sp; return XR_SUCCESS;
}
static XrResult XRAPI_CALL destroySpace(XrSpace s) { free((void *)s); return XR_SUCCESS; }
static int space_pose(Space *sp, XrPosef *out) {
  if (sp->kind == 0) { *out = sp->offset; return 1; }
  Sample *m = &g_current[sp->hand];
  if (!m->valid || sp->component == C_NONE || !focused()) return 0;
  *out = compose(m->pose, sp->offset);
  return 1;
}
static XrResult XRAPI_CALL locateSpace(XrSpace space, XrSpace base, XrTime t, XrSpaceLocation *loc) {
  (void)t; XrPosef a, b;
  if (!space_pose((Space *)space, &a) || !space_pose((Space *)base, &b)) { loc->locationFlags = 0; return XR_SUCCESS; }
  loc->pose = compose(inverse(b), a);
  loc->locationFlags = XR_SPACE_LOCATION_ORIENTATION_VALID_BIT | XR_SPACE_LOCATION_POSITION_VALID_BIT |
                       XR_SPACE_LOCATION_ORIENTATION_TRACKED_BIT | XR_SPACE_LOCATION_POSITION_TRACKED_BIT;
  return XR_SUCCESS;
}

/* ---------------------------------------------------------------- dispatch */
static const struct { const char *name; PFN_xrVoidFunction fn; } FUNCS[] = {
#define F(n, f) { n, (PFN_xrVoidFunction)f }
  F("xrEnumerateInstanceExtensionProperties", enumExt), F("xrCreateInstance", createInstance),
  F("xrDestroyInstance", destroyInstance), F("xrGetInstanceProperties", getInstanceProperties),
  F("xrGetSystem", getSystem), F("xrGetSystemProperties", getSystemProperties), F("xrPollEvent", pollEvent),
  F("xrResultToString", resultToString), F("xrStructureTypeToString", typeToString),
  F("xrStringToPath", stringToPath), F("xrPathToString", pathToString), F("xrCreateActionSet", createActionSet),
  F("xrDestroyActionSet", destroyActionSet), F("xrCreateAction", createAction), F("xrDestroyAction", destroyAction),
  F("xrSuggestInteractionProfileBindings", suggestBindings), F("xrCreateSession", createSession),
  F("xrDestroySession", destroySession), F("xrBeginSession", beginSession), F("xrEndSession", endSession),
  F("xrRequestExitSession", requestExit), F("xrWaitFrame", waitFrame), F("xrBeginFrame", beginFrame),
  F("xrEndFrame", endFrame), F("xrAttachSessionActionSets", attachActionSets), F("xrSyncActions", syncActions),
  F("xrGetActionStateBoolean", stateBool), F("xrGetActionStateFloat", stateFloat),
  F("xrGetActionStateVector2f", stateVec2), F("xrGetActionStatePose", statePose),
  F("xrCreateReferenceSpace", createRefSpace), F("xrCreateActionSpace", createActionSpace),
  F("xrDestroySpace", destroySpace), F("xrLocateSpace", locateSpace),
#undef F
};
static XrResult XRAPI_CALL getInstanceProcAddr(XrInstance inst, const char *name, PFN_xrVoidFunction *fn) {
  (void)inst;
  for (size_t k = 0; k < sizeof(FUNCS) / sizeof(FUNCS[0]); k++)
    if (strcmp(FUNCS[k].name, name) == 0) { *fn = FUNCS[k].fn; return XR_SUCCESS; }
  if (strcmp(name, "xrGetInstanceProcAddr") == 0) { *fn = (PFN_xrVoidFunction)getInstanceProcAddr; return XR_SUCCESS; }
  *fn = NULL;
  return XR_ERROR_FUNCTION_UNSUPPORTED;
}

EXPORT XrResult xrNegotiateLoaderRuntimeInterface(const XrNegotiateLoaderInfo *li, XrNegotiateRuntimeRequest *rr) {
  if (!li || !rr || li->structType != LOADER_INFO || rr->structType != RUNTIME_REQUEST || li->minInterfaceVersion > 1)
    return XR_ERROR_INITIALIZATION_FAILED;
  rr->runtimeInterfaceVersion = 1;
  rr->runtimeApiVersion = XR_MAKE_VERSION(1, 0, 20);
  rr->getInstanceProcAddr = getInstanceProcAddr;
  return XR_SUCCESS;
}

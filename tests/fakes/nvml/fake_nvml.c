/*
 * A fake libnvidia-ml.so.1 so the real pynvml code path runs on a machine without a GPU.
 *
 * Why C and not a Python mock: pynvml resolves every C symbol by name and passes ctypes
 * structs by pointer, so only a real shared library exercises symbol lookup (missing symbol ->
 * NVMLError_FunctionNotFound), struct layouts and return-code handling the way a driver does.
 *
 * The model is a GB300 compute tray (4 GPUs by default), values from
 * docs/reference/nvidia-smi-q-gb300.xml (the real capture, shipped in the repository).
 * Nothing here reads the wall clock except field-value timestamps (microseconds since the epoch, as the driver stamps them) and
 * nvmlEventSetWait_v2's timeout: every value changes only when a test sets it through the
 * fake_nvml_* control functions (tests/fakes/nvml/control.py wraps them), or, for a client run
 * as a command, through FAKE_NVML_SETUP at its first nvmlInit.
 *
 * Declarations are our own, checked against the real nvml.h by a test through layout.h.
 * Build: cc -shared -fPIC -O2 -fvisibility=hidden -pthread -Wl,-soname,libnvidia-ml.so.1
 * Variants: -DFAKE_NVML_OMIT_<symbol> leaves <symbol> out of the library entirely.
 *
 * Concurrency: the event queue is guarded by a mutex (the agent waits on it from its event
 * thread while a test injects). Telemetry values are plain words set by the test between
 * samples; they are not locked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API __attribute__((visibility("default")))

/* ---- declarations matching nvml.h ------------------------------------------------------- */

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_NO_PERMISSION = 4, NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7, NVML_ERROR_TIMEOUT = 10, NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25, NVML_ERROR_DEPRECATED = 26, NVML_ERROR_UNKNOWN = 999,
};
typedef int nvmlValueType_t;
enum { VT_DOUBLE = 0, VT_UINT = 1, VT_ULONG = 2, VT_ULL = 3, VT_SLL = 4, VT_SINT = 5 };

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlEventSet_st *nvmlEventSet_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_v2_t;
typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;
typedef union {
    double dVal; unsigned int uiVal; unsigned long ulVal; unsigned long long ullVal;
    signed long long sllVal; signed int siVal; unsigned short usVal;
} nvmlValue_t;
typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    nvmlValueType_t valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;
typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId, state, healthMask;
} nvmlGpuFabricInfo_v2_t;
typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId, state, healthMask;
    unsigned char healthSummary;
} nvmlGpuFabricInfo_v3_t;
typedef struct {
    unsigned int version;
    unsigned char ibGuid[16], rackGuid[16];
    unsigned char chassisPhysicalSlotNumber, computeSlotIndex, nodeIndex, peerType, moduleId;
} nvmlPlatformInfo_v1_t;
typedef struct {
    unsigned int version;
    unsigned char ibGuid[16], chassisSerialNumber[16];
    unsigned char slotNumber, trayIndex, hostId, peerType, moduleId;
} nvmlPlatformInfo_v2_t;
typedef struct { unsigned int version; int sensorType; int temperature; } nvmlTemperature_v1_t;

#define STRUCT_VERSION(type, ver) ((unsigned int)(sizeof(type) | ((ver) << 24U)))
#define EVENT_XID 0x8ULL

/* ---- the model -------------------------------------------------------------------------- */

#define MAX_GPUS 16
#define MAX_MIG 7
#define MAX_PROCS 64
#define MAX_LINKS 36
#define MAX_FIELD 320
#define MAX_SETS 8
#define QUEUE_LEN 256
#define MAX_FORCED 64

/* Every settable number, by name: fake_nvml_set_value(gpu, "power_mw", 500000). */
#define VALUES(X)                                                                              \
    X(util_gpu) X(util_mem) X(mem_total) X(mem_reserved) X(mem_used)                           \
    X(power_mw) X(power_instant_mw) X(module_power_mw) X(module_power_instant_mw)              \
    X(limit_mw) X(default_limit_mw) X(min_limit_mw) X(max_limit_mw) X(external_limit_mw)      \
    X(module_limit_mw) X(module_default_limit_mw) X(module_min_limit_mw) X(module_max_limit_mw) \
    X(energy_mj) X(temp_gpu) X(temp_mem)                                                       \
    X(clock_graphics) X(clock_sm) X(clock_mem) X(clock_video)                                  \
    X(max_clock_graphics) X(max_clock_sm) X(max_clock_mem) X(max_clock_video)                  \
    X(clock_event_reasons)                                                                     \
    X(persistence_mode) X(compute_mode) X(pstate) X(display_active) X(util_enc) X(util_dec)   \
    X(bar1_total) X(bar1_used) X(pcie_tx_kbps) X(pcie_rx_kbps) X(pcie_link_gen) X(pcie_link_width) \
    X(ecc_enabled) X(ecc_pending) X(ecc_sbe_volatile) X(ecc_dbe_volatile)                      \
    X(ecc_sbe_aggregate) X(ecc_dbe_aggregate)                                                  \
    X(remapped_cor) X(remapped_unc) X(remapped_pending) X(remapped_failure) X(pcie_replay)     \
    X(nvlink_count) X(nvlink_tx_kib) X(nvlink_rx_kib) X(nvlink_raw_tx_kib) X(nvlink_raw_rx_kib) \
    X(nvlink_crc_flit_errors) X(nvlink_crc_data_errors) X(nvlink_replay_errors)                \
    X(nvlink_recovery_errors) X(recovery_action)                                               \
    X(fabric_state) X(fabric_status) X(fabric_clique_id) X(fabric_health_mask)                 \
    X(fabric_health_summary)                                                                   \
    X(mig_current) X(mig_pending) X(mig_max_devices) X(gpu_instance_id) X(compute_instance_id) \
    X(module_id) X(slot_number) X(tray_index) X(host_id) X(peer_type)                          \
    X(pci_domain) X(pci_bus) X(pci_device) X(pci_device_id) X(pci_subsystem_id)                \
    X(supported_events)

struct values {
#define X(n) long long n;
    VALUES(X)
#undef X
};

#define STRINGS(X) X(uuid, 96) X(name, 96) X(serial, 30) X(chassis_serial, 17) X(cluster_uuid, 37)

struct nvmlDevice_st {
    int slot;   /* index in gpus[] (the parent's, for a MIG device) */
    int mig;    /* -1 for a physical GPU, else the MIG device index */
    int lost;   /* every call returns GPU_IS_LOST */
    struct values v;
#define X(n, len) char n[len];
    STRINGS(X)
#undef X
    int nvlink_state[MAX_LINKS];
    long long link_counter[MAX_LINKS][16]; /* per-link error fields, see LINK_COUNTER_FIELDS */
    unsigned int nprocs;
    nvmlProcessInfo_v2_t procs[MAX_PROCS];
};

struct nvmlEventSet_st {
    int used;
    unsigned long long mask[MAX_GPUS];
    nvmlEventData_t queue[QUEUE_LEN];
    int head, count;
};

static struct nvmlDevice_st gpus[MAX_GPUS];
static struct nvmlDevice_st migs[MAX_GPUS][MAX_MIG];
static int order[MAX_GPUS]; /* visible index -> slot */
static int visible;
static int init_count;
static long long field_clock_us;
static char driver_version[80], nvml_version[80];
static int cuda_driver_version;
static struct { char fn[64]; int gpu; int ret; } forced[MAX_FORCED];
static int field_ret[MAX_GPUS][MAX_FIELD];
static struct nvmlEventSet_st sets[MAX_SETS];
static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cond;
/* Calls per C function, so a test can see that a call is not retried. */
#define MAX_COUNTED 128
static struct { const char *fn; long count; } calls[MAX_COUNTED];
static pthread_mutex_t calls_lock = PTHREAD_MUTEX_INITIALIZER;

static const long long IDLE_MW[4] = {180360, 176260, 175920, 180050};       /* l.241 ... */
static const long long IDLE_INSTANT_MW[4] = {180290, 176260, 175910, 180050};
static const long long MODULE_MW[4] = {488290, 486300, 496850, 494320};     /* l.255 ... */
static const long long MODULE_INSTANT_MW[4] = {487680, 486210, 500530, 493090};
static const long long TEMP_GPU[4] = {38, 39, 39, 39};                      /* l.226 ... */
static const long long TEMP_MEM[4] = {38, 38, 39, 39};

#define MIB (1024ULL * 1024ULL)

static void init_gpu(int slot) {
    struct nvmlDevice_st *g = &gpus[slot];
    struct values *v = &g->v;
    int k = slot % 4;
    memset(g, 0, sizeof(*g));
    g->slot = slot;
    g->mig = -1;
    snprintf(g->uuid, sizeof g->uuid, "GPU-%08x-0000-0000-0000-%012x", slot, slot);
    snprintf(g->name, sizeof g->name, "NVIDIA GB300");
    snprintf(g->serial, sizeof g->serial, "%lld", 1650000000001LL + slot / 2);
    snprintf(g->chassis_serial, sizeof g->chassis_serial, "1820000000001");
    snprintf(g->cluster_uuid, sizeof g->cluster_uuid, "00000001-0000-0000-0000-000000000001");
    v->mem_total = 284208 * MIB;
    v->mem_reserved = 947 * MIB;
    v->power_mw = IDLE_MW[k];
    v->power_instant_mw = IDLE_INSTANT_MW[k];
    v->module_power_mw = MODULE_MW[k];
    v->module_power_instant_mw = MODULE_INSTANT_MW[k];
    v->limit_mw = v->default_limit_mw = v->max_limit_mw = v->external_limit_mw = 1400000;
    v->min_limit_mw = 200000;
    v->module_limit_mw = v->module_default_limit_mw = v->module_max_limit_mw = 2900000;
    v->module_min_limit_mw = 500000;
    v->energy_mj = 123456789LL + slot;
    v->temp_gpu = TEMP_GPU[k];
    v->temp_mem = TEMP_MEM[k];
    v->clock_graphics = v->clock_sm = 120;
    v->clock_mem = v->max_clock_mem = 3996;
    v->clock_video = 600;
    v->max_clock_graphics = v->max_clock_sm = 2070;
    v->max_clock_video = 1912;
    v->clock_event_reasons = 0x1; /* nvmlClocksEventReasonGpuIdle */
    v->persistence_mode = 1;      /* Enabled */
    v->compute_mode = 0;          /* NVML_COMPUTEMODE_DEFAULT */
    v->pstate = 0;                /* P0, at idle too */
    v->bar1_total = 524288 * MIB;
    v->pcie_link_gen = 6;
    v->pcie_link_width = 16;
    v->ecc_enabled = v->ecc_pending = 1;
    v->nvlink_count = 18;
    for (int l = 0; l < MAX_LINKS; l++) g->nvlink_state[l] = l < 18 ? 1 : 0;
    v->fabric_state = 3; /* NVML_GPU_FABRIC_STATE_COMPLETED */
    v->fabric_clique_id = 32766;
    v->fabric_health_mask = 0x1AA; /* bandwidth full, no recovery, routes healthy, config ok */
    v->fabric_health_summary = 1;  /* HEALTHY */
    v->mig_max_devices = MAX_MIG;
    v->gpu_instance_id = v->compute_instance_id = 0xFFFFFFFFLL;
    v->module_id = (slot ^ 1) + 1; /* the capture pairs them crosswise: 2, 1, 4, 3 */
    v->slot_number = 25;
    v->tray_index = 15;
    v->host_id = 1;
    v->peer_type = 1;
    v->pci_domain = 0x8 + (slot / 2) * 0x10 + slot % 2;
    v->pci_bus = 6;
    v->pci_device_id = 0x31C210DELL;
    v->pci_subsystem_id = 0x21F110DELL;
    v->supported_events = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x8000;
}

/* Restores the default tray: 4 GPUs, no overrides, empty event queues (sets stay registered). */
API void fake_nvml_reset(void) {
    pthread_mutex_lock(&ev_lock);
    for (int s = 0; s < MAX_GPUS; s++) {
        init_gpu(s);
        memset(migs[s], 0, sizeof migs[s]);
        order[s] = s;
    }
    visible = 4;
    snprintf(driver_version, sizeof driver_version, "580.173.02");
    snprintf(nvml_version, sizeof nvml_version, "13.580.173.02");
    cuda_driver_version = 13000;
    memset(forced, 0, sizeof forced);
    memset(field_ret, 0, sizeof field_ret);
    field_clock_us = 0;
    for (int i = 0; i < MAX_SETS; i++) sets[i].head = sets[i].count = 0;
    pthread_mutex_unlock(&ev_lock);
    pthread_mutex_lock(&calls_lock);
    for (int i = 0; i < MAX_COUNTED; i++) calls[i].count = 0;
    pthread_mutex_unlock(&calls_lock);
}

__attribute__((constructor)) static void fake_nvml_load(void) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ev_cond, &attr);
    fake_nvml_reset();
}

/* ---- helpers ------------------------------------------------------------------------------ */

static int is_gpu(nvmlDevice_t d) { return d >= &gpus[0] && d < &gpus[MAX_GPUS]; }
static int is_mig(nvmlDevice_t d) {
    return d >= &migs[0][0] && d < &migs[0][0] + MAX_GPUS * MAX_MIG && d->mig >= 0;
}

static nvmlReturn_t forced_return(const char *fn, int gpu) {
    int any = NVML_SUCCESS;
    for (int i = 0; i < MAX_FORCED; i++) {
        if (!forced[i].ret || strcmp(forced[i].fn, fn) != 0) continue;
        if (forced[i].gpu == gpu) return forced[i].ret;
        if (forced[i].gpu == -1) any = forced[i].ret;
    }
    return any;
}

static void count_call(const char *fn) {
    pthread_mutex_lock(&calls_lock);
    for (int i = 0; i < MAX_COUNTED; i++) {
        if (!calls[i].fn || strcmp(calls[i].fn, fn) == 0) {
            calls[i].fn = fn; /* __func__ strings live as long as the library */
            calls[i].count++;
            break;
        }
    }
    pthread_mutex_unlock(&calls_lock);
}

static nvmlReturn_t check_system(const char *fn) {
    count_call(fn);
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    return forced_return(fn, -1);
}

static nvmlReturn_t check_device(const char *fn, nvmlDevice_t d) {
    count_call(fn);
    if (!init_count) return NVML_ERROR_UNINITIALIZED;
    if (!d || !(is_gpu(d) || is_mig(d))) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = forced_return(fn, d->slot);
    if (r) return r;
    return gpus[d->slot].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS;
}

#define CHECK(d) do { nvmlReturn_t r_ = check_device(__func__, (d)); if (r_) return r_; } while (0)
#define CHECK_SYSTEM() do { nvmlReturn_t r_ = check_system(__func__); if (r_) return r_; } while (0)
#define NONNULL(p) do { if (!(p)) return NVML_ERROR_INVALID_ARGUMENT; } while (0)

static nvmlReturn_t copy_string(char *dst, unsigned int len, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

static void parse_uuid(const char *text, unsigned char out[16]) {
    int n = 0;
    memset(out, 0, 16);
    for (const char *p = text; *p && n < 32; p++) {
        int d;
        if (*p >= '0' && *p <= '9') d = *p - '0';
        else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
        else continue;
        out[n / 2] |= (unsigned char)(n % 2 ? d : d << 4);
        n++;
    }
}

/* ---- system ------------------------------------------------------------------------------- */

static nvmlReturn_t apply_env_setup(void); /* FAKE_NVML_SETUP, for clients run as commands */

#ifndef FAKE_NVML_OMIT_nvmlInitWithFlags
API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    count_call(__func__);
    nvmlReturn_t r = forced_return(__func__, -1);
    if (!r) r = apply_env_setup();
    if (r) return r;
    init_count++;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlInit_v2
API nvmlReturn_t nvmlInit_v2(void) {
    count_call(__func__);
    nvmlReturn_t r = forced_return(__func__, -1);
    if (!r) r = apply_env_setup();
    if (r) return r;
    init_count++;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlShutdown
API nvmlReturn_t nvmlShutdown(void) {
    CHECK_SYSTEM();
    init_count--;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlErrorString
API const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Requested functionality has been deprecated";
    default: return "Unknown Error";
    }
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlSystemGetDriverVersion
API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    CHECK_SYSTEM();
    return copy_string(version, length, driver_version);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlSystemGetNVMLVersion
API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    CHECK_SYSTEM();
    return copy_string(version, length, nvml_version);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlSystemGetCudaDriverVersion
API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    CHECK_SYSTEM();
    NONNULL(version);
    *version = cuda_driver_version;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlSystemGetCudaDriverVersion_v2
API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    CHECK_SYSTEM();
    NONNULL(version);
    *version = cuda_driver_version;
    return NVML_SUCCESS;
}
#endif

/* ---- enumeration and identity ------------------------------------------------------------- */

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetCount_v2
API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    CHECK_SYSTEM();
    NONNULL(count);
    *count = (unsigned int)visible;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetHandleByIndex_v2
/* A lost GPU that is still counted answers GPU_IS_LOST here, as one that fell off the bus does. */
API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    CHECK_SYSTEM();
    NONNULL(device);
    if (index >= (unsigned int)visible) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlDevice_st *g = &gpus[order[index]];
    nvmlReturn_t r = forced_return(__func__, g->slot);
    if (r) return r;
    if (g->lost) return NVML_ERROR_GPU_IS_LOST;
    *device = g;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetIndex
API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
    CHECK(d);
    NONNULL(index);
    for (int i = 0; i < visible; i++)
        if (order[i] == d->slot) { *index = (unsigned int)i; return NVML_SUCCESS; }
    return NVML_ERROR_NOT_FOUND;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetUUID
API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    CHECK(d);
    return copy_string(uuid, length, d->uuid);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetName
API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    CHECK(d);
    return copy_string(name, length, d->name);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetSerial
API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t d, char *serial, unsigned int length) {
    CHECK(d);
    return copy_string(serial, length, d->serial);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPciInfo_v3
API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    CHECK(d);
    NONNULL(pci);
    const struct values *v = &gpus[d->slot].v;
    memset(pci, 0, sizeof *pci);
    pci->domain = (unsigned int)v->pci_domain;
    pci->bus = (unsigned int)v->pci_bus;
    pci->device = (unsigned int)v->pci_device;
    pci->pciDeviceId = (unsigned int)v->pci_device_id;
    pci->pciSubSystemId = (unsigned int)v->pci_subsystem_id;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", pci->domain & 0xFFFF, pci->bus,
             pci->device);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus, pci->device);
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPlatformInfo
/* Takes v1 or v2 by the version field, like the driver; v1 has no chassis serial. */
API nvmlReturn_t nvmlDeviceGetPlatformInfo(nvmlDevice_t d, void *info) {
    CHECK(d);
    NONNULL(info);
    const struct values *v = &gpus[d->slot].v;
    unsigned int version = *(unsigned int *)info;
    if (version == STRUCT_VERSION(nvmlPlatformInfo_v2_t, 2)) {
        nvmlPlatformInfo_v2_t *p = info;
        memset(p, 0, sizeof *p);
        p->version = version;
        memcpy(p->chassisSerialNumber, gpus[d->slot].chassis_serial, strlen(gpus[d->slot].chassis_serial));
        p->slotNumber = (unsigned char)v->slot_number;
        p->trayIndex = (unsigned char)v->tray_index;
        p->hostId = (unsigned char)v->host_id;
        p->peerType = (unsigned char)v->peer_type;
        p->moduleId = (unsigned char)v->module_id;
        p->ibGuid[7] = (unsigned char)(d->slot + 1);
        return NVML_SUCCESS;
    }
    if (version == STRUCT_VERSION(nvmlPlatformInfo_v1_t, 1)) {
        nvmlPlatformInfo_v1_t *p = info;
        memset(p, 0, sizeof *p);
        p->version = version;
        p->chassisPhysicalSlotNumber = (unsigned char)v->slot_number;
        p->computeSlotIndex = (unsigned char)v->tray_index;
        p->nodeIndex = (unsigned char)v->host_id;
        p->peerType = (unsigned char)v->peer_type;
        p->moduleId = (unsigned char)v->module_id;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetModuleId
API nvmlReturn_t nvmlDeviceGetModuleId(nvmlDevice_t d, unsigned int *moduleId) {
    CHECK(d);
    NONNULL(moduleId);
    *moduleId = (unsigned int)gpus[d->slot].v.module_id;
    return NVML_SUCCESS;
}
#endif

/* ---- memory, utilisation, processes ------------------------------------------------------- */

/* What belongs to the physical GPU (utilisation, power, temperature, clocks, P-state) answers
 * NOT_SUPPORTED on a MIG device handle; memory and processes are per instance. */
#define PHYSICAL(d) do { if ((d)->mig >= 0) return NVML_ERROR_NOT_SUPPORTED; } while (0)

/* What the driver counts as used: mem_used, and never less than the listed processes hold. */
static unsigned long long used_bytes(const struct nvmlDevice_st *d) {
    unsigned long long held = 0;
    for (unsigned int i = 0; i < d->nprocs; i++) held += d->procs[i].usedGpuMemory;
    return (unsigned long long)d->v.mem_used > held ? (unsigned long long)d->v.mem_used : held;
}

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMemoryInfo
API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    CHECK(d);
    NONNULL(m);
    const struct values *v = &d->v;
    m->total = (unsigned long long)v->mem_total;
    m->used = used_bytes(d) + (unsigned long long)v->mem_reserved; /* v1 counts reserved as used */
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMemoryInfo_v2
API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    CHECK(d);
    NONNULL(m);
    if (m->version != STRUCT_VERSION(nvmlMemory_v2_t, 2)) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    const struct values *v = &d->v;
    m->total = (unsigned long long)v->mem_total;
    m->reserved = (unsigned long long)v->mem_reserved;
    m->used = used_bytes(d);
    m->free = m->total - m->reserved - m->used;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetUtilizationRates
API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(u);
    u->gpu = (unsigned int)d->v.util_gpu;
    u->memory = (unsigned int)d->v.util_mem;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetComputeRunningProcesses_v3
/* The two-call protocol: too small a buffer gets INSUFFICIENT_SIZE and the count needed. */
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                         nvmlProcessInfo_v2_t *infos) {
    CHECK(d);
    NONNULL(count);
    unsigned int n = d->nprocs;
    if (n == 0) { *count = 0; return NVML_SUCCESS; }
    if (!infos || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    memcpy(infos, d->procs, n * sizeof *infos);
    *count = n;
    return NVML_SUCCESS;
}
#endif

/* ---- power, energy, temperature, clocks --------------------------------------------------- */

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPowerUsage
API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(mw);
    *mw = (unsigned int)d->v.power_mw;
    return NVML_SUCCESS;
}
#endif

static long long enforced_mw(const struct values *v) {
    return v->limit_mw < v->external_limit_mw ? v->limit_mw : v->external_limit_mw;
}

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetEnforcedPowerLimit
/* The lower of the limit set through NVML and one set elsewhere (out of band: external_limit_mw). */
API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *mw) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(mw);
    *mw = (unsigned int)enforced_mw(&d->v);
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPowerManagementLimit
API nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t d, unsigned int *mw) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(mw);
    *mw = (unsigned int)d->v.limit_mw;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPowerManagementDefaultLimit
API nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t d, unsigned int *mw) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(mw);
    *mw = (unsigned int)d->v.default_limit_mw;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPowerManagementLimitConstraints
API nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t d, unsigned int *min, unsigned int *max) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(min);
    NONNULL(max);
    *min = (unsigned int)d->v.min_limit_mw;
    *max = (unsigned int)d->v.max_limit_mw;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceSetPowerManagementLimit
/* Like the driver: refuses (does not clamp) a value outside [min, max]. */
API nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t d, unsigned int mw) {
    CHECK(d);
    if (d->mig >= 0) return NVML_ERROR_NOT_SUPPORTED;
    if ((long long)mw < d->v.min_limit_mw || (long long)mw > d->v.max_limit_mw) return NVML_ERROR_INVALID_ARGUMENT;
    d->v.limit_mw = mw;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetTotalEnergyConsumption
API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(mj);
    *mj = (unsigned long long)d->v.energy_mj;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetTemperature
API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *temp) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(temp);
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = (unsigned int)d->v.temp_gpu;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetTemperatureV
API nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t d, nvmlTemperature_v1_t *t) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(t);
    if (t->version != STRUCT_VERSION(nvmlTemperature_v1_t, 1)) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (t->sensorType != 0) return NVML_ERROR_INVALID_ARGUMENT;
    t->temperature = (int)d->v.temp_gpu;
    return NVML_SUCCESS;
}
#endif

static long long *clock_of(struct values *v, int type, int max) {
    switch (type) {
    case 0: return max ? &v->max_clock_graphics : &v->clock_graphics;
    case 1: return max ? &v->max_clock_sm : &v->clock_sm;
    case 2: return max ? &v->max_clock_mem : &v->clock_mem;
    case 3: return max ? &v->max_clock_video : &v->clock_video;
    default: return NULL;
    }
}

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetClockInfo
API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(mhz);
    long long *c = clock_of(&d->v, type, 0);
    if (!c) return NVML_ERROR_INVALID_ARGUMENT;
    *mhz = (unsigned int)*c;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMaxClockInfo
API nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(mhz);
    long long *c = clock_of(&d->v, type, 1);
    if (!c) return NVML_ERROR_INVALID_ARGUMENT;
    *mhz = (unsigned int)*c;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetCurrentClocksEventReasons
API nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *reasons) {
    CHECK(d);
    PHYSICAL(d);
    NONNULL(reasons);
    *reasons = (unsigned long long)d->v.clock_event_reasons;
    return NVML_SUCCESS;
}
#endif

/* ---- health: ECC, row remapping, PCIe, NVLink -------------------------------------------- */

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetEccMode
API nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t d, int *current, int *pending) {
    CHECK(d);
    NONNULL(current);
    NONNULL(pending);
    *current = (int)d->v.ecc_enabled;
    *pending = (int)d->v.ecc_pending;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetTotalEccErrors
/* errorType 0 corrected / 1 uncorrected, counterType 0 volatile / 1 aggregate. */
API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int errorType, int counterType,
                                             unsigned long long *count) {
    CHECK(d);
    NONNULL(count);
    const struct values *v = &gpus[d->slot].v;
    if (!v->ecc_enabled) return NVML_ERROR_NOT_SUPPORTED;
    if (errorType < 0 || errorType > 1 || counterType < 0 || counterType > 1) return NVML_ERROR_INVALID_ARGUMENT;
    long long table[2][2] = {{v->ecc_sbe_volatile, v->ecc_sbe_aggregate}, {v->ecc_dbe_volatile, v->ecc_dbe_aggregate}};
    *count = (unsigned long long)table[errorType][counterType];
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetRemappedRows
API nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t d, unsigned int *corr, unsigned int *unc,
                                           unsigned int *pending, unsigned int *failure) {
    CHECK(d);
    NONNULL(corr);
    NONNULL(unc);
    NONNULL(pending);
    NONNULL(failure);
    const struct values *v = &gpus[d->slot].v;
    *corr = (unsigned int)v->remapped_cor;
    *unc = (unsigned int)v->remapped_unc;
    *pending = (unsigned int)v->remapped_pending;
    *failure = (unsigned int)v->remapped_failure;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPcieReplayCounter
API nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t d, unsigned int *value) {
    CHECK(d);
    NONNULL(value);
    *value = (unsigned int)d->v.pcie_replay;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetNvLinkState
API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t d, unsigned int link, int *active) {
    CHECK(d);
    NONNULL(active);
    if (link >= (unsigned int)d->v.nvlink_count) return NVML_ERROR_INVALID_ARGUMENT;
    *active = d->nvlink_state[link] == 1;
    return NVML_SUCCESS;
}
#endif

/* ---- field values ------------------------------------------------------------------------- */

#define SCOPE_ALL_LINKS 0xFFFFFFFFU

static void set_u(nvmlFieldValue_t *f, long long x) { f->valueType = VT_UINT; f->value.uiVal = (unsigned int)x; }
static void set_ull(nvmlFieldValue_t *f, long long x) { f->valueType = VT_ULL; f->value.ullVal = (unsigned long long)x; }

/* Power and limits exist for scope 0 (GPU) and 1 (module); other scopes are not supported. */
static nvmlReturn_t power_field(const struct values *v, nvmlFieldValue_t *f) {
    long long gpu, module;
    switch (f->fieldId) {
    case 185: gpu = v->power_mw; module = v->module_power_mw; break;
    case 186: gpu = v->power_instant_mw; module = v->module_power_instant_mw; break;
    case 187: gpu = v->min_limit_mw; module = v->module_min_limit_mw; break;
    case 188: gpu = v->max_limit_mw; module = v->module_max_limit_mw; break;
    case 189: gpu = v->default_limit_mw; module = v->module_default_limit_mw; break;
    default: gpu = enforced_mw(v); module = v->module_limit_mw; break; /* 190 */
    }
    if (f->scopeId > 1) return NVML_ERROR_NOT_SUPPORTED;
    set_u(f, f->scopeId == 0 ? gpu : module);
    return NVML_SUCCESS;
}

/* Per-link error counters: the field takes the link id in scopeId (nvml.h). The legacy totals
 * (38/45/52/59, all lanes of one link) and the NVLink5 NVLINK_COUNT_* family. The per-GPU values
 * nvlink_*_errors are link 0's; fake_nvml_set_link_counter sets any link's. */
static const unsigned int LINK_COUNTER_FIELDS[] = {38, 45, 52, 59, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215};
#define N_LINK_COUNTERS ((int)(sizeof LINK_COUNTER_FIELDS / sizeof *LINK_COUNTER_FIELDS))

static int link_counter_index(unsigned int field) {
    for (int i = 0; i < N_LINK_COUNTERS; i++)
        if (LINK_COUNTER_FIELDS[i] == field) return i;
    return -1;
}

static nvmlReturn_t link_counter(struct nvmlDevice_st *g, nvmlFieldValue_t *f) {
    const struct values *v = &g->v;
    if (f->scopeId >= (unsigned int)v->nvlink_count || f->scopeId >= MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
    long long x = g->link_counter[f->scopeId][link_counter_index(f->fieldId)];
    if (f->scopeId == 0) {
        switch (f->fieldId) {
        case 38: x += v->nvlink_crc_flit_errors; break;
        case 45: x += v->nvlink_crc_data_errors; break;
        case 52: x += v->nvlink_replay_errors; break;
        case 59: x += v->nvlink_recovery_errors; break;
        default: break;
        }
    }
    set_ull(f, x);
    return NVML_SUCCESS;
}

API int fake_nvml_set_link_counter(int gpu, int link, int field, long long value) {
    int i = link_counter_index((unsigned int)field);
    if (gpu < 0 || gpu >= MAX_GPUS || link < 0 || link >= MAX_LINKS || i < 0) return -2;
    gpus[gpu].link_counter[link][i] = value;
    return 0;
}

/* Microseconds since the epoch, as the driver stamps field values; strictly increasing, so two
 * reads in the same microsecond still have an interval. */
static long long field_timestamp_us(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long us = (long long)now.tv_sec * 1000000LL + now.tv_nsec / 1000;
    if (us <= field_clock_us) us = field_clock_us + 1;
    field_clock_us = us;
    return us;
}

static long long per_link(const struct values *v, long long total, unsigned int scope) {
    return scope == SCOPE_ALL_LINKS || v->nvlink_count <= 0 ? total : total / v->nvlink_count;
}

static nvmlReturn_t read_field(struct nvmlDevice_st *g, nvmlFieldValue_t *f) {
    const struct values *v = &g->v;
    switch (f->fieldId) {
    case 3: set_ull(f, v->ecc_sbe_volatile); return v->ecc_enabled ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
    case 4: set_ull(f, v->ecc_dbe_volatile); return v->ecc_enabled ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
    case 5: set_ull(f, v->ecc_sbe_aggregate); return v->ecc_enabled ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
    case 6: set_ull(f, v->ecc_dbe_aggregate); return v->ecc_enabled ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
    case 38: case 45: case 52: case 59: return link_counter(g, f);
    case 206: case 207: case 208: case 209: case 210: case 211: case 212: case 213: case 214: case 215:
        return link_counter(g, f);
    case 82: set_u(f, v->temp_mem); return NVML_SUCCESS;
    case 83: case 191: set_ull(f, v->energy_mj); return NVML_SUCCESS;
    case 91: set_u(f, v->nvlink_count); return NVML_SUCCESS;
    case 94: set_u(f, v->pcie_replay); return NVML_SUCCESS;
    case 138: set_ull(f, per_link(v, v->nvlink_tx_kib, f->scopeId)); return NVML_SUCCESS;
    case 139: set_ull(f, per_link(v, v->nvlink_rx_kib, f->scopeId)); return NVML_SUCCESS;
    case 140: set_ull(f, per_link(v, v->nvlink_raw_tx_kib, f->scopeId)); return NVML_SUCCESS;
    case 141: set_ull(f, per_link(v, v->nvlink_raw_rx_kib, f->scopeId)); return NVML_SUCCESS;
    case 142: set_u(f, v->remapped_cor); return NVML_SUCCESS;
    case 143: set_u(f, v->remapped_unc); return NVML_SUCCESS;
    case 144: set_u(f, v->remapped_pending); return NVML_SUCCESS;
    case 145: set_u(f, v->remapped_failure); return NVML_SUCCESS;
    case 165:
        if (f->scopeId >= (unsigned int)v->nvlink_count) return NVML_ERROR_INVALID_ARGUMENT;
        set_u(f, g->nvlink_state[f->scopeId]);
        return NVML_SUCCESS;
    case 185: case 186: case 187: case 188: case 189: case 190: return power_field(v, f);
    case 230: set_u(f, v->recovery_action); return NVML_SUCCESS;
    default: return NVML_ERROR_NOT_SUPPORTED;
    }
}

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetFieldValues
/* Each entry carries its own nvmlReturn; the call itself fails for bad arguments, and whole
 * when it asks a field whose field_ret is negative (-ret: a driver refusing the batch for it). */
API nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    CHECK(d);
    if (count < 0 || (count > 0 && !values)) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlDevice_st *g = &gpus[d->slot];
    for (int i = 0; i < count; i++) {
        int forced_ret = values[i].fieldId < MAX_FIELD ? field_ret[d->slot][values[i].fieldId] : 0;
        if (forced_ret < 0) return -forced_ret;
    }
    long long timestamp = field_timestamp_us();
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *f = &values[i];
        memset(&f->value, 0, sizeof f->value);
        f->timestamp = timestamp;
        f->latencyUsec = 0;
        int forced_ret = f->fieldId < MAX_FIELD ? field_ret[d->slot][f->fieldId] : 0;
        f->nvmlReturn = forced_ret ? forced_ret : read_field(g, f);
    }
    return NVML_SUCCESS;
}
#endif

/* ---- MIG and fabric ----------------------------------------------------------------------- */

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMigMode
API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    CHECK(d);
    NONNULL(current);
    NONNULL(pending);
    *current = (unsigned int)d->v.mig_current;
    *pending = (unsigned int)d->v.mig_pending;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMaxMigDeviceCount
API nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    CHECK(d);
    NONNULL(count);
    *count = (unsigned int)d->v.mig_max_devices;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMigDeviceHandleByIndex
API nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *mig) {
    CHECK(d);
    NONNULL(mig);
    if (!is_gpu(d) || !d->v.mig_current) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= MAX_MIG || migs[d->slot][index].mig < 0 || !migs[d->slot][index].uuid[0])
        return NVML_ERROR_NOT_FOUND;
    *mig = &migs[d->slot][index];
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceIsMigDeviceHandle
API nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *isMig) {
    CHECK(d);
    NONNULL(isMig);
    *isMig = d->mig >= 0;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetGpuInstanceId
API nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    CHECK(d);
    NONNULL(id);
    if (d->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = (unsigned int)d->v.gpu_instance_id;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetComputeInstanceId
API nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id) {
    CHECK(d);
    NONNULL(id);
    if (d->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = (unsigned int)d->v.compute_instance_id;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetGpuFabricInfoV
/* Takes v2 or v3 by the version field; healthSummary exists from v3. */
API nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t d, void *info) {
    CHECK(d);
    NONNULL(info);
    const struct values *v = &gpus[d->slot].v;
    unsigned int version = *(unsigned int *)info;
    int v3 = version == STRUCT_VERSION(nvmlGpuFabricInfo_v3_t, 3);
    if (!v3 && version != STRUCT_VERSION(nvmlGpuFabricInfo_v2_t, 2)) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (v->fabric_state == 0) return NVML_ERROR_NOT_SUPPORTED;
    nvmlGpuFabricInfo_v3_t out;
    memset(&out, 0, sizeof out);
    out.version = version;
    if (v->fabric_state == 3) {
        parse_uuid(gpus[d->slot].cluster_uuid, out.clusterUuid);
        out.cliqueId = (unsigned int)v->fabric_clique_id;
    }
    out.status = (nvmlReturn_t)v->fabric_status;
    out.state = (unsigned int)v->fabric_state;
    out.healthMask = (unsigned int)v->fabric_health_mask;
    out.healthSummary = (unsigned char)v->fabric_health_summary;
    memcpy(info, &out, v3 ? sizeof(nvmlGpuFabricInfo_v3_t) : sizeof(nvmlGpuFabricInfo_v2_t));
    return NVML_SUCCESS;
}
#endif

/* ---- GPM (Hopper/Blackwell profiling) ---- */
/*
 * nvmlGpmQueryDeviceSupport, nvmlGpmSampleAlloc/Free, nvmlGpmSampleGet (and the MIG variant)
 * and nvmlGpmMetricsGet, with nvml.h's structs. A sample is an opaque buffer the caller
 * allocates; nvmlGpmSampleGet fills it with the GPU's counters at that moment and
 * nvmlGpmMetricsGet computes each requested metric over the interval between two samples, its
 * own nvmlReturn per entry. What the counters do:
 *
 * - NVLink read/write bandwidth (metrics 60/61, MiB/s) is the change of the fake's NVLink
 *   data counters (nvlink_rx_kib / nvlink_tx_kib, the ones fields 138-141 read) over the
 *   interval, so the two views of the same traffic agree.
 * - GRAPHICS_UTIL and SM_UTIL follow util_gpu, DRAM_BW_UTIL follows util_mem (percent).
 * - Every other metric id below NVML_GPM_METRIC_MAX reads 0 (an idle GPU) unless a test sets
 *   it (fake_nvml_gpm_set: the level during the interval, taken from the later sample), or
 *   makes its entry fail (fake_nvml_gpm_fail).
 * - Time: CLOCK_MONOTONIC, as a driver's sample timestamps; a test pins it instead with
 *   fake_nvml_gpm_set_clock so the derived rates are exact.
 *
 * Also here, although not GPM, because DCGM_FI_DEV_ENC_UTIL / DEC_UTIL come from them:
 * nvmlDeviceGetEncoderUtilization / nvmlDeviceGetDecoderUtilization (0 % in the capture).
 *
 * GPM state lives in this section and is cleared by fake_nvml_gpm_reset (the fixtures that use
 * GPM call it), not by fake_nvml_reset.
 */

#define NVML_GPM_METRIC_MAX 477
#define NVML_GPM_METRICS_GET_VERSION 1
#define NVML_GPM_SUPPORT_VERSION 1
#define GPM_GRAPHICS_UTIL 1
#define GPM_SM_UTIL 2
#define GPM_DRAM_BW_UTIL 10
#define GPM_NVLINK_TOTAL_RX_PER_SEC 60
#define GPM_NVLINK_TOTAL_TX_PER_SEC 61
#define GPM_SAMPLE_MAGIC 0x47504d53u

typedef struct nvmlGpmSample_st *nvmlGpmSample_t;
typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct { char *shortName; char *longName; char *unit; } metricInfo;
} nvmlGpmMetric_t;
typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1;
    nvmlGpmSample_t sample2;
    nvmlGpmMetric_t metrics[NVML_GPM_METRIC_MAX];
} nvmlGpmMetricsGet_t;
typedef struct { unsigned int version; unsigned int isSupportedDevice; } nvmlGpmSupport_t;

struct gpm_config {
    int unsupported;                       /* nvmlGpmQueryDeviceSupport says no; samples fail */
    unsigned char set[NVML_GPM_METRIC_MAX]; /* 1: value[] holds what the test set */
    double value[NVML_GPM_METRIC_MAX];
    nvmlReturn_t ret[NVML_GPM_METRIC_MAX];  /* per-entry failure */
};

struct nvmlGpmSample_st {
    unsigned int magic;
    int filled;
    int slot;
    double t;
    long long nvlink_tx_kib, nvlink_rx_kib, util_gpu, util_mem;
    struct gpm_config config;
};

static struct gpm_config gpm[MAX_GPUS];
static double gpm_clock = -1.0; /* < 0: CLOCK_MONOTONIC */
static long gpm_live_samples;
static pthread_mutex_t gpm_lock = PTHREAD_MUTEX_INITIALIZER;

static double gpm_now(void) {
    if (gpm_clock >= 0) return gpm_clock;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int valid_sample(nvmlGpmSample_t s) { return s && s->magic == GPM_SAMPLE_MAGIC; }

#ifndef FAKE_NVML_OMIT_nvmlGpmQueryDeviceSupport
API nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t d, nvmlGpmSupport_t *support) {
    CHECK(d);
    NONNULL(support);
    if (support->version != NVML_GPM_SUPPORT_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    support->isSupportedDevice = gpm[d->slot].unsupported ? 0 : 1;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlGpmSampleAlloc
API nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *sample) {
    CHECK_SYSTEM();
    NONNULL(sample);
    struct nvmlGpmSample_st *s = calloc(1, sizeof *s);
    if (!s) return 20; /* NVML_ERROR_MEMORY */
    s->magic = GPM_SAMPLE_MAGIC;
    pthread_mutex_lock(&gpm_lock);
    gpm_live_samples++;
    pthread_mutex_unlock(&gpm_lock);
    *sample = s;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlGpmSampleFree
API nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t sample) {
    CHECK_SYSTEM();
    if (!valid_sample(sample)) return NVML_ERROR_INVALID_ARGUMENT;
    sample->magic = 0;
    free(sample);
    pthread_mutex_lock(&gpm_lock);
    gpm_live_samples--;
    pthread_mutex_unlock(&gpm_lock);
    return NVML_SUCCESS;
}
#endif

static nvmlReturn_t gpm_fill(nvmlDevice_t d, nvmlGpmSample_t s) {
    if (!valid_sample(s)) return NVML_ERROR_INVALID_ARGUMENT;
    const struct gpm_config *c = &gpm[d->slot];
    if (c->unsupported) return NVML_ERROR_NOT_SUPPORTED;
    const struct values *v = &gpus[d->slot].v;
    s->slot = d->slot;
    s->t = gpm_now();
    s->nvlink_tx_kib = v->nvlink_tx_kib;
    s->nvlink_rx_kib = v->nvlink_rx_kib;
    s->util_gpu = v->util_gpu;
    s->util_mem = v->util_mem;
    s->config = *c;
    s->filled = 1;
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_OMIT_nvmlGpmSampleGet
API nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t d, nvmlGpmSample_t sample) {
    CHECK(d);
    return gpm_fill(d, sample);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlGpmMigSampleGet
API nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t d, unsigned int gpuInstanceId, nvmlGpmSample_t sample) {
    CHECK(d);
    if (!gpus[d->slot].v.mig_current) return NVML_ERROR_NOT_SUPPORTED;
    (void)gpuInstanceId; /* one model per GPU: an instance reads its parent's counters */
    return gpm_fill(d, sample);
}
#endif

static double gpm_rate_mib_s(long long kib1, long long kib2, double dt) {
    return kib2 > kib1 ? (double)(kib2 - kib1) / 1024.0 / dt : 0.0; /* a reset reads as idle */
}

#ifndef FAKE_NVML_OMIT_nvmlGpmMetricsGet
API nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *mg) {
    CHECK_SYSTEM();
    NONNULL(mg);
    if (mg->version != NVML_GPM_METRICS_GET_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (mg->numMetrics > NVML_GPM_METRIC_MAX) return NVML_ERROR_INVALID_ARGUMENT;
    const struct nvmlGpmSample_st *s1 = mg->sample1, *s2 = mg->sample2;
    if (!valid_sample(mg->sample1) || !valid_sample(mg->sample2) || !s1->filled || !s2->filled)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (s1->slot != s2->slot) return NVML_ERROR_INVALID_ARGUMENT;
    double dt = s2->t - s1->t;
    if (dt <= 0) return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < mg->numMetrics; i++) {
        nvmlGpmMetric_t *m = &mg->metrics[i];
        unsigned int id = m->metricId;
        m->value = 0.0;
        m->metricInfo.shortName = m->metricInfo.longName = m->metricInfo.unit = NULL;
        if (id == 0 || id >= NVML_GPM_METRIC_MAX) { m->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT; continue; }
        const struct gpm_config *c = &s2->config;
        if (c->ret[id]) { m->nvmlReturn = c->ret[id]; continue; }
        m->nvmlReturn = NVML_SUCCESS;
        if (c->set[id]) m->value = c->value[id];
        else if (id == GPM_GRAPHICS_UTIL || id == GPM_SM_UTIL) m->value = (double)s2->util_gpu;
        else if (id == GPM_DRAM_BW_UTIL) m->value = (double)s2->util_mem;
        else if (id == GPM_NVLINK_TOTAL_TX_PER_SEC) m->value = gpm_rate_mib_s(s1->nvlink_tx_kib, s2->nvlink_tx_kib, dt);
        else if (id == GPM_NVLINK_TOTAL_RX_PER_SEC) m->value = gpm_rate_mib_s(s1->nvlink_rx_kib, s2->nvlink_rx_kib, dt);
    }
    return NVML_SUCCESS;
}
#endif

/* nvmlDeviceGetEncoderUtilization / DecoderUtilization: in the clients' section below. */

/* GPM control (tests only; not part of NVML). 0 on success, -2 for a bad slot or metric id. */

API void fake_nvml_gpm_reset(void) {
    memset(gpm, 0, sizeof gpm);
    gpm_clock = -1.0;
}

API int fake_nvml_gpm_set_supported(int gpu, int supported) {
    if (gpu < 0 || gpu >= MAX_GPUS) return -2;
    gpm[gpu].unsupported = !supported;
    return 0;
}

API int fake_nvml_gpm_set(int gpu, unsigned int metric, double value) {
    if (gpu < 0 || gpu >= MAX_GPUS || metric == 0 || metric >= NVML_GPM_METRIC_MAX) return -2;
    gpm[gpu].set[metric] = 1;
    gpm[gpu].value[metric] = value;
    return 0;
}

API int fake_nvml_gpm_fail(int gpu, unsigned int metric, int ret) {
    if (gpu < 0 || gpu >= MAX_GPUS || metric == 0 || metric >= NVML_GPM_METRIC_MAX) return -2;
    gpm[gpu].ret[metric] = ret;
    return 0;
}

/* seconds < 0: back to CLOCK_MONOTONIC. */
API void fake_nvml_gpm_set_clock(double seconds) { gpm_clock = seconds; }

API int fake_nvml_set_codec_util(int gpu, unsigned int encoder, unsigned int decoder) {
    if (gpu < 0 || gpu >= MAX_GPUS || encoder > 100 || decoder > 100) return -2;
    gpus[gpu].v.util_enc = encoder; /* what nvmlDeviceGetEncoderUtilization answers */
    gpus[gpu].v.util_dec = decoder;
    return 0;
}

/* Samples allocated and not yet freed (a reader that leaks them shows here). */
API long fake_nvml_gpm_live_samples(void) {
    pthread_mutex_lock(&gpm_lock);
    long n = gpm_live_samples;
    pthread_mutex_unlock(&gpm_lock);
    return n;
}

/* ---- events ------------------------------------------------------------------------------- */

static int valid_set(nvmlEventSet_t s) { return s >= &sets[0] && s < &sets[MAX_SETS] && s->used; }

#ifndef FAKE_NVML_OMIT_nvmlEventSetCreate
API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    CHECK_SYSTEM();
    NONNULL(set);
    pthread_mutex_lock(&ev_lock);
    for (int i = 0; i < MAX_SETS; i++) {
        if (!sets[i].used) {
            memset(&sets[i], 0, sizeof sets[i]);
            sets[i].used = 1;
            *set = &sets[i];
            pthread_mutex_unlock(&ev_lock);
            return NVML_SUCCESS;
        }
    }
    pthread_mutex_unlock(&ev_lock);
    return NVML_ERROR_UNKNOWN;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlEventSetFree
API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    CHECK_SYSTEM();
    pthread_mutex_lock(&ev_lock);
    if (!valid_set(set)) { pthread_mutex_unlock(&ev_lock); return NVML_ERROR_INVALID_ARGUMENT; }
    set->used = 0;
    pthread_cond_broadcast(&ev_cond);
    pthread_mutex_unlock(&ev_lock);
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetSupportedEventTypes
API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) {
    CHECK(d);
    NONNULL(types);
    *types = (unsigned long long)gpus[d->slot].v.supported_events;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceRegisterEvents
/* Like the driver: NOT_SUPPORTED if any requested type is not supported by the device. */
API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    CHECK(d);
    if (!is_gpu(d)) return NVML_ERROR_NOT_SUPPORTED;
    if (types & ~(unsigned long long)d->v.supported_events) return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&ev_lock);
    if (!valid_set(set)) { pthread_mutex_unlock(&ev_lock); return NVML_ERROR_INVALID_ARGUMENT; }
    set->mask[d->slot] |= types;
    pthread_mutex_unlock(&ev_lock);
    return NVML_SUCCESS;
}
#endif

/* A GPU registered in the set that fell off the bus: the wait answers GPU_IS_LOST for it. */
static int set_has_lost_gpu(const struct nvmlEventSet_st *set) {
    for (int s = 0; s < MAX_GPUS; s++)
        if (set->mask[s] && gpus[s].lost) return 1;
    return 0;
}

#ifndef FAKE_NVML_OMIT_nvmlEventSetWait_v2
/* Queued events first; with none queued, GPU_IS_LOST at once while a registered GPU is lost
 * (as the driver does), else TIMEOUT after timeoutms. */
API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    CHECK_SYSTEM();
    NONNULL(data);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeoutms / 1000;
    deadline.tv_nsec += (long)(timeoutms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&ev_lock);
    if (!valid_set(set)) { pthread_mutex_unlock(&ev_lock); return NVML_ERROR_INVALID_ARGUMENT; }
    if (set->count == 0 && set_has_lost_gpu(set)) { pthread_mutex_unlock(&ev_lock); return NVML_ERROR_GPU_IS_LOST; }
    while (set->used && set->count == 0) {
        if (pthread_cond_timedwait(&ev_cond, &ev_lock, &deadline) == ETIMEDOUT) break;
    }
    if (!set->used || set->count == 0) { pthread_mutex_unlock(&ev_lock); return NVML_ERROR_TIMEOUT; }
    *data = set->queue[set->head];
    set->head = (set->head + 1) % QUEUE_LEN;
    set->count--;
    pthread_mutex_unlock(&ev_lock);
    return NVML_SUCCESS;
}
#endif

/* ---- what NVML clients call (gpustat, nvitop) ---- */
/*
 * What an R580 libnvidia-ml exports for the calls gpustat and nvitop make: the older versioned
 * aliases a driver keeps for old binaries (nvmlInit, _v1/_v2 process lists, GetPciInfo/_v2,
 * GetHandleByIndex/GetCount v1, GetDriverModel), and the queries those clients show. Values are
 * the capture's (persistence Enabled, P0, compute mode Default, display active Disabled, BAR1
 * 524288 MiB, PCIe gen 6 x16, 0 KB/s); what the capture shows as N/A (fan, driver model) is
 * NOT_SUPPORTED, and the display mode is DEPRECATED, as R580 answers on a GB300.
 */

typedef struct { unsigned int pid; unsigned long long usedGpuMemory; } nvmlProcessInfo_v1_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
    unsigned long long usedGpuCcProtectedMemory;
} nvmlProcessDetail_v1_t;
typedef struct {
    unsigned int version, mode, numProcArrayEntries;
    nvmlProcessDetail_v1_t *procArray;
} nvmlProcessDetailList_v1_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;
typedef struct { unsigned long long bar1Total, bar1Free, bar1Used; } nvmlBAR1Memory_t;
typedef struct { unsigned long long protectedMemSizeKib, unprotectedMemSizeKib; } nvmlConfComputeMemSizeInfo_t;

enum { PROCESS_MODE_COMPUTE = 0, PROCESS_MODE_GRAPHICS = 1, PROCESS_MODE_MPS = 2, PROCESS_MODE_ALL = 3 };
#define SAMPLING_PERIOD_US 167000U /* the encoder/decoder sampling period drivers report; not in the capture */

#ifndef FAKE_NVML_OMIT_nvmlInit
API nvmlReturn_t nvmlInit(void) {
    count_call(__func__);
    nvmlReturn_t r = forced_return(__func__, -1);
    if (!r) r = apply_env_setup();
    if (r) return r;
    init_count++;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetCount
API nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) {
    CHECK_SYSTEM();
    NONNULL(count);
    *count = (unsigned int)visible;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetHandleByIndex
API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    CHECK_SYSTEM();
    NONNULL(device);
    if (index >= (unsigned int)visible) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlDevice_st *g = &gpus[order[index]];
    if (g->lost) return NVML_ERROR_GPU_IS_LOST;
    *device = g;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetHandleByUUID
/* Finds a visible GPU, or a MIG device of one, by its UUID string. */
API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    CHECK_SYSTEM();
    NONNULL(uuid);
    NONNULL(device);
    for (int i = 0; i < visible; i++) {
        struct nvmlDevice_st *g = &gpus[order[i]];
        if (strcmp(g->uuid, uuid) == 0) {
            if (g->lost) return NVML_ERROR_GPU_IS_LOST;
            *device = g;
            return NVML_SUCCESS;
        }
        for (int k = 0; k < MAX_MIG && g->v.mig_current; k++) {
            struct nvmlDevice_st *m = &migs[g->slot][k];
            if (m->mig >= 0 && m->uuid[0] && strcmp(m->uuid, uuid) == 0) {
                if (g->lost) return NVML_ERROR_GPU_IS_LOST;
                *device = m;
                return NVML_SUCCESS;
            }
        }
    }
    return NVML_ERROR_NOT_FOUND;
}
#endif

static nvmlReturn_t handle_by_bus_id(const char *bus_id, nvmlDevice_t *device) {
    NONNULL(bus_id);
    NONNULL(device);
    unsigned int domain = 0, bus = 0, dev = 0, fn = 0;
    if (sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) != 4) {
        domain = 0;
        if (sscanf(bus_id, "%x:%x.%x", &bus, &dev, &fn) != 3) return NVML_ERROR_INVALID_ARGUMENT;
    }
    for (int i = 0; i < visible; i++) {
        struct nvmlDevice_st *g = &gpus[order[i]];
        if ((unsigned int)g->v.pci_domain == domain && (unsigned int)g->v.pci_bus == bus &&
            (unsigned int)g->v.pci_device == dev && fn == 0) {
            if (g->lost) return NVML_ERROR_GPU_IS_LOST;
            *device = g;
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetHandleByPciBusId_v2
API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device) {
    CHECK_SYSTEM();
    return handle_by_bus_id(pciBusId, device);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetHandleByPciBusId
API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device) {
    CHECK_SYSTEM();
    return handle_by_bus_id(pciBusId, device);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPciInfo_v3
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPciInfo_v2
API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t d, nvmlPciInfo_t *pci) { return nvmlDeviceGetPciInfo_v3(d, pci); }
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPciInfo
API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t d, nvmlPciInfo_t *pci) { return nvmlDeviceGetPciInfo_v3(d, pci); }
#endif
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMinorNumber
API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    CHECK(d);
    NONNULL(minor);
    PHYSICAL(d);
    *minor = (unsigned int)d->slot; /* /dev/nvidia<slot>; the capture's GPU 0 is minor 0 */
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetBrand
API nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t d, int *brand) {
    CHECK(d);
    NONNULL(brand);
    *brand = 14; /* NVML_BRAND_NVIDIA: product_brand NVIDIA */
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetArchitecture
API nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t d, unsigned int *arch) {
    CHECK(d);
    NONNULL(arch);
    *arch = 10; /* NVML_DEVICE_ARCH_BLACKWELL */
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetCudaComputeCapability
API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    CHECK(d);
    NONNULL(major);
    NONNULL(minor);
    *major = 10; /* GB300 is sm_103 */
    *minor = 3;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPersistenceMode
API nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t d, int *mode) {
    CHECK(d);
    NONNULL(mode);
    *mode = (int)gpus[d->slot].v.persistence_mode;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetComputeMode
API nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t d, int *mode) {
    CHECK(d);
    NONNULL(mode);
    *mode = (int)gpus[d->slot].v.compute_mode;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPerformanceState
API nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t d, int *pstate) {
    CHECK(d);
    NONNULL(pstate);
    PHYSICAL(d);
    *pstate = (int)d->v.pstate;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPowerState
/* The deprecated name of nvmlDeviceGetPerformanceState, still exported. */
API nvmlReturn_t nvmlDeviceGetPowerState(nvmlDevice_t d, int *pstate) {
    CHECK(d);
    NONNULL(pstate);
    PHYSICAL(d);
    *pstate = (int)d->v.pstate;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetDisplayMode
API nvmlReturn_t nvmlDeviceGetDisplayMode(nvmlDevice_t d, int *mode) {
    CHECK(d);
    NONNULL(mode);
    return NVML_ERROR_DEPRECATED; /* the capture: "Requested functionality has been deprecated" */
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetDisplayActive
API nvmlReturn_t nvmlDeviceGetDisplayActive(nvmlDevice_t d, int *active) {
    CHECK(d);
    NONNULL(active);
    *active = (int)gpus[d->slot].v.display_active;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetDriverModel_v2
/* WDDM/TCC exist on Windows only. */
API nvmlReturn_t nvmlDeviceGetDriverModel_v2(nvmlDevice_t d, int *current, int *pending) {
    CHECK(d);
    (void)current;
    (void)pending;
    return NVML_ERROR_NOT_SUPPORTED;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetDriverModel
API nvmlReturn_t nvmlDeviceGetDriverModel(nvmlDevice_t d, int *current, int *pending) {
    CHECK(d);
    (void)current;
    (void)pending;
    return NVML_ERROR_NOT_SUPPORTED;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetFanSpeed
/* A liquid-cooled GB300 has no fan: the capture's fan_speed is N/A. */
API nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t d, unsigned int *speed) {
    CHECK(d);
    NONNULL(speed);
    return NVML_ERROR_NOT_SUPPORTED;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetFanSpeed_v2
API nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t d, unsigned int fan, unsigned int *speed) {
    CHECK(d);
    NONNULL(speed);
    (void)fan;
    return NVML_ERROR_NOT_SUPPORTED;
}
#endif

static nvmlReturn_t engine_util(nvmlDevice_t d, long long value, unsigned int *util, unsigned int *period) {
    NONNULL(util);
    NONNULL(period);
    PHYSICAL(d);
    *util = (unsigned int)value;
    *period = SAMPLING_PERIOD_US;
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetEncoderUtilization
API nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t d, unsigned int *util, unsigned int *period) {
    CHECK(d);
    return engine_util(d, d->v.util_enc, util, period);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetDecoderUtilization
API nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t d, unsigned int *util, unsigned int *period) {
    CHECK(d);
    return engine_util(d, d->v.util_dec, util, period);
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetBAR1MemoryInfo
API nvmlReturn_t nvmlDeviceGetBAR1MemoryInfo(nvmlDevice_t d, nvmlBAR1Memory_t *bar1) {
    CHECK(d);
    NONNULL(bar1);
    const struct values *v = &gpus[d->slot].v;
    bar1->bar1Total = (unsigned long long)v->bar1_total;
    bar1->bar1Used = (unsigned long long)v->bar1_used;
    bar1->bar1Free = bar1->bar1Total - bar1->bar1Used;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetConfComputeMemSizeInfo
/* Confidential computing is off: no protected memory (the capture's cc_protected_memory 0 MiB). */
API nvmlReturn_t nvmlDeviceGetConfComputeMemSizeInfo(nvmlDevice_t d, nvmlConfComputeMemSizeInfo_t *info) {
    CHECK(d);
    NONNULL(info);
    info->protectedMemSizeKib = 0;
    info->unprotectedMemSizeKib = (unsigned long long)gpus[d->slot].v.mem_total / 1024;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetPcieThroughput
/* counter 0 TX, 1 RX, in KB/s. */
API nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned int *value) {
    CHECK(d);
    NONNULL(value);
    PHYSICAL(d);
    if (counter != 0 && counter != 1) return NVML_ERROR_INVALID_ARGUMENT;
    *value = (unsigned int)(counter == 0 ? d->v.pcie_tx_kbps : d->v.pcie_rx_kbps);
    return NVML_SUCCESS;
}
#endif

#define PCIE_LINK(fn, field)                                                                    \
    API nvmlReturn_t fn(nvmlDevice_t d, unsigned int *out) {                                    \
        CHECK(d);                                                                               \
        NONNULL(out);                                                                           \
        PHYSICAL(d);                                                                            \
        *out = (unsigned int)d->v.field;                                                        \
        return NVML_SUCCESS;                                                                    \
    }
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetCurrPcieLinkGeneration
PCIE_LINK(nvmlDeviceGetCurrPcieLinkGeneration, pcie_link_gen)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMaxPcieLinkGeneration
PCIE_LINK(nvmlDeviceGetMaxPcieLinkGeneration, pcie_link_gen)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetCurrPcieLinkWidth
PCIE_LINK(nvmlDeviceGetCurrPcieLinkWidth, pcie_link_width)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMaxPcieLinkWidth
PCIE_LINK(nvmlDeviceGetMaxPcieLinkWidth, pcie_link_width)
#endif
#undef PCIE_LINK

/* The processes of one mode: the fake's processes are compute contexts; no graphics or MPS. */
static unsigned int mode_count(nvmlDevice_t d, int mode) {
    return mode == PROCESS_MODE_COMPUTE || mode == PROCESS_MODE_ALL ? d->nprocs : 0;
}

/* The two-call protocol of every *RunningProcesses* version; `width` is the caller's struct. */
static nvmlReturn_t list_processes(nvmlDevice_t d, int mode, unsigned int *count, void *infos, size_t width) {
    NONNULL(count);
    unsigned int n = mode_count(d, mode);
    if (n == 0) { *count = 0; return NVML_SUCCESS; }
    if (!infos || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    for (unsigned int i = 0; i < n; i++) {
        nvmlProcessDetail_v1_t p = {d->procs[i].pid, d->procs[i].usedGpuMemory, d->procs[i].gpuInstanceId,
                                    d->procs[i].computeInstanceId, 0};
        memcpy((char *)infos + i * width, &p, width); /* v1, v2 and the detail entry share a prefix */
    }
    *count = n;
    return NVML_SUCCESS;
}

#define PROCESS_LIST(fn, mode, type)                                                            \
    API nvmlReturn_t fn(nvmlDevice_t d, unsigned int *count, type *infos) {                     \
        CHECK(d);                                                                               \
        return list_processes(d, mode, count, infos, sizeof(type));                             \
    }
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetComputeRunningProcesses_v2
PROCESS_LIST(nvmlDeviceGetComputeRunningProcesses_v2, PROCESS_MODE_COMPUTE, nvmlProcessInfo_v2_t)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetComputeRunningProcesses
PROCESS_LIST(nvmlDeviceGetComputeRunningProcesses, PROCESS_MODE_COMPUTE, nvmlProcessInfo_v1_t)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetGraphicsRunningProcesses_v3
PROCESS_LIST(nvmlDeviceGetGraphicsRunningProcesses_v3, PROCESS_MODE_GRAPHICS, nvmlProcessInfo_v2_t)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetGraphicsRunningProcesses_v2
PROCESS_LIST(nvmlDeviceGetGraphicsRunningProcesses_v2, PROCESS_MODE_GRAPHICS, nvmlProcessInfo_v2_t)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetGraphicsRunningProcesses
PROCESS_LIST(nvmlDeviceGetGraphicsRunningProcesses, PROCESS_MODE_GRAPHICS, nvmlProcessInfo_v1_t)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMPSComputeRunningProcesses_v3
PROCESS_LIST(nvmlDeviceGetMPSComputeRunningProcesses_v3, PROCESS_MODE_MPS, nvmlProcessInfo_v2_t)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMPSComputeRunningProcesses_v2
PROCESS_LIST(nvmlDeviceGetMPSComputeRunningProcesses_v2, PROCESS_MODE_MPS, nvmlProcessInfo_v2_t)
#endif
#ifndef FAKE_NVML_OMIT_nvmlDeviceGetMPSComputeRunningProcesses
PROCESS_LIST(nvmlDeviceGetMPSComputeRunningProcesses, PROCESS_MODE_MPS, nvmlProcessInfo_v1_t)
#endif
#undef PROCESS_LIST

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetRunningProcessDetailList
API nvmlReturn_t nvmlDeviceGetRunningProcessDetailList(nvmlDevice_t d, nvmlProcessDetailList_v1_t *list) {
    CHECK(d);
    NONNULL(list);
    if (list->version != STRUCT_VERSION(nvmlProcessDetailList_v1_t, 1)) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (list->mode > PROCESS_MODE_ALL) return NVML_ERROR_INVALID_ARGUMENT;
    return list_processes(d, (int)list->mode, &list->numProcArrayEntries, list->procArray,
                          sizeof(nvmlProcessDetail_v1_t));
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetProcessUtilization
/* One sample per process with non-zero utilisation, the GPU's shared out evenly; NOT_FOUND when
 * there is none (an idle GPU, as in the capture). Samples are stamped just after `lastSeen`:
 * the fake does not read the wall clock. */
API nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *samples,
                                                 unsigned int *count, unsigned long long lastSeen) {
    CHECK(d);
    NONNULL(count);
    PHYSICAL(d);
    unsigned int n = d->nprocs;
    if (n == 0 || (d->v.util_gpu == 0 && d->v.util_mem == 0)) return NVML_ERROR_NOT_FOUND;
    if (!samples || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    for (unsigned int i = 0; i < n; i++) {
        samples[i].pid = d->procs[i].pid;
        samples[i].timeStamp = lastSeen + 1;
        samples[i].smUtil = (unsigned int)(d->v.util_gpu / n);
        samples[i].memUtil = (unsigned int)(d->v.util_mem / n);
        samples[i].encUtil = (unsigned int)(d->v.util_enc / n);
        samples[i].decUtil = (unsigned int)(d->v.util_dec / n);
    }
    *count = n;
    return NVML_SUCCESS;
}
#endif

#ifndef FAKE_NVML_OMIT_nvmlDeviceGetDeviceHandleFromMigDeviceHandle
API nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t d, nvmlDevice_t *parent) {
    CHECK(d);
    NONNULL(parent);
    if (d->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *parent = &gpus[d->slot];
    return NVML_SUCCESS;
}
#endif

/* ---- control for a client in a subprocess (tests only): FAKE_NVML_SETUP ---- */

/* A process that is not the test's (gpustat, nvitop run as commands) cannot be reached through
 * the fake_nvml_* functions, so the first nvmlInit* of a process applies FAKE_NVML_SETUP, a list
 * of `;`-separated control calls: "process <gpu> <pid> <MiB>", "set <gpu> <name> <value>",
 * "string <gpu> <name> <value>". A malformed entry fails the init with INVALID_ARGUMENT, so a
 * test never runs on a tray it did not ask for. */
API int fake_nvml_add_process(int gpu, unsigned int pid, unsigned long long used_bytes);
API int fake_nvml_set_value(int gpu, const char *name, long long value);
API int fake_nvml_set_string(int gpu, const char *name, const char *value);

static nvmlReturn_t parse_env_setup(const char *spec) {
    if (!spec) return NVML_SUCCESS;
    char entry[256];
    while (*spec) {
        size_t len = strcspn(spec, ";");
        if (len >= sizeof entry) return NVML_ERROR_INVALID_ARGUMENT;
        memcpy(entry, spec, len);
        entry[len] = '\0';
        spec += len + (spec[len] == ';');
        char verb[16], name[64], text[96];
        int gpu, used = 0;
        long long a, b;
        if (sscanf(entry, " %15s", verb) != 1) continue; /* an empty entry */
        if (strcmp(verb, "process") == 0 && sscanf(entry, " process %d %lld %lld %n", &gpu, &a, &b, &used) == 3 &&
            !entry[used] && a > 0 && b >= 0) {
            if (fake_nvml_add_process(gpu, (unsigned int)a, (unsigned long long)b * MIB)) return NVML_ERROR_INVALID_ARGUMENT;
        } else if (strcmp(verb, "set") == 0 && sscanf(entry, " set %d %63s %lld %n", &gpu, name, &a, &used) == 3 &&
                   !entry[used]) {
            if (fake_nvml_set_value(gpu, name, a)) return NVML_ERROR_INVALID_ARGUMENT;
        } else if (strcmp(verb, "string") == 0 && sscanf(entry, " string %d %63s %95s %n", &gpu, name, text, &used) == 3 &&
                   !entry[used]) {
            if (fake_nvml_set_string(gpu, name, text)) return NVML_ERROR_INVALID_ARGUMENT;
        } else {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
    }
    return NVML_SUCCESS;
}

static nvmlReturn_t apply_env_setup(void) {
    static int done;
    static nvmlReturn_t result;
    if (!done) {
        done = 1;
        const char *spec = getenv("FAKE_NVML_SETUP");
        result = spec ? parse_env_setup(spec) : NVML_SUCCESS;
    }
    return result; /* a bad setup fails every init, not only the first */
}

/* ---- control functions (tests only; not part of NVML) ------------------------------------ */

static long long *value_ptr(struct values *v, const char *name) {
#define X(n) if (strcmp(name, #n) == 0) return &v->n;
    VALUES(X)
#undef X
    return NULL;
}

static const char *const value_names[] = {
#define X(n) #n,
    VALUES(X)
#undef X
    NULL,
};

API const char *fake_nvml_value_name(int i) {
    return i >= 0 && i < (int)(sizeof value_names / sizeof *value_names) ? value_names[i] : NULL;
}

static struct nvmlDevice_st *slot_ptr(int gpu) { return gpu >= 0 && gpu < MAX_GPUS ? &gpus[gpu] : NULL; }

/* 0 on success, -1 for an unknown name, -2 for a bad GPU slot. */
API int fake_nvml_set_value(int gpu, const char *name, long long value) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g) return -2;
    long long *p = value_ptr(&g->v, name);
    if (!p) return -1;
    *p = value;
    return 0;
}

API int fake_nvml_get_value(int gpu, const char *name, long long *out) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g) return -2;
    long long *p = value_ptr(&g->v, name);
    if (!p) return -1;
    *out = *p;
    return 0;
}

/* gpu -1 sets the system strings driver_version / nvml_version. */
API int fake_nvml_set_string(int gpu, const char *name, const char *value) {
    if (gpu == -1) {
        if (strcmp(name, "driver_version") == 0) { snprintf(driver_version, sizeof driver_version, "%s", value); return 0; }
        if (strcmp(name, "nvml_version") == 0) { snprintf(nvml_version, sizeof nvml_version, "%s", value); return 0; }
        return -1;
    }
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g) return -2;
#define X(n, len) if (strcmp(name, #n) == 0) { snprintf(g->n, sizeof g->n, "%s", value); return 0; }
    STRINGS(X)
#undef X
    return -1;
}

API void fake_nvml_set_cuda_driver_version(int version) { cuda_driver_version = version; }

API int fake_nvml_set_nvlink_state(int gpu, int link, int state) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g || link < 0 || link >= MAX_LINKS) return -2;
    g->nvlink_state[link] = state;
    return 0;
}

/* Makes `fn` (the exact C symbol, e.g. "nvmlDeviceGetPowerUsage") return `ret` for GPU slot
 * `gpu`, or every GPU with -1; ret 0 removes the override. */
API int fake_nvml_set_return(const char *fn, int gpu, int ret) {
    int free_slot = -1;
    for (int i = 0; i < MAX_FORCED; i++) {
        if (forced[i].ret && forced[i].gpu == gpu && strcmp(forced[i].fn, fn) == 0) {
            forced[i].ret = ret;
            return 0;
        }
        if (!forced[i].ret && free_slot < 0) free_slot = i;
    }
    if (!ret) return 0;
    if (free_slot < 0) return -1;
    snprintf(forced[free_slot].fn, sizeof forced[free_slot].fn, "%s", fn);
    forced[free_slot].gpu = gpu;
    forced[free_slot].ret = ret;
    return 0;
}

/* Makes one field id's entry carry `ret` in nvmlDeviceGetFieldValues (0 restores it). */
API int fake_nvml_set_field_return(int gpu, int field, int ret) {
    if (!slot_ptr(gpu) || field < 0 || field >= MAX_FIELD) return -2;
    field_ret[gpu][field] = ret;
    return 0;
}

/* Shows the first `count` GPU slots, in order. */
API int fake_nvml_set_device_count(int count) {
    if (count < 0 || count > MAX_GPUS) return -2;
    for (int s = 0; s < MAX_GPUS; s++) order[s] = s;
    visible = count;
    return 0;
}

/* The GPU falls off the bus: every call on it answers GPU_IS_LOST; with `drop` it also leaves
 * the device count (the GPUs after it move down one index, as after a driver reload). */
API int fake_nvml_lose_gpu(int gpu, int drop) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g) return -2;
    g->lost = 1;
    if (drop) {
        int j = 0;
        for (int i = 0; i < visible; i++)
            if (order[i] != gpu) order[j++] = order[i];
        visible = j;
    }
    return 0;
}

/* The GPU is back (after a reset): answers again and is counted again in slot order. */
API int fake_nvml_restore_gpu(int gpu) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g) return -2;
    g->lost = 0;
    for (int i = 0; i < visible; i++)
        if (order[i] == gpu) return 0;
    int i = visible++;
    while (i > 0 && order[i - 1] > gpu) { order[i] = order[i - 1]; i--; }
    order[i] = gpu;
    return 0;
}

API int fake_nvml_add_process(int gpu, unsigned int pid, unsigned long long used_bytes) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g || g->nprocs >= MAX_PROCS) return -2;
    nvmlProcessInfo_v2_t *p = &g->procs[g->nprocs++];
    p->pid = pid;
    p->usedGpuMemory = used_bytes;
    p->gpuInstanceId = p->computeInstanceId = 0xFFFFFFFFU;
    return 0;
}

API int fake_nvml_remove_process(int gpu, unsigned int pid) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g) return -2;
    for (unsigned int i = 0; i < g->nprocs; i++) {
        if (g->procs[i].pid == pid) {
            g->procs[i] = g->procs[--g->nprocs];
            return 0;
        }
    }
    return -1;
}

/* MIG on (current=1) with `count` 1-slice devices MIG-<gpu>-<k>, GPU instance ids 1..count. */
API int fake_nvml_set_mig(int gpu, int current, int pending, int count) {
    struct nvmlDevice_st *g = slot_ptr(gpu);
    if (!g || count < 0 || count > MAX_MIG) return -2;
    g->v.mig_current = current;
    g->v.mig_pending = pending;
    for (int k = 0; k < MAX_MIG; k++) {
        struct nvmlDevice_st *m = &migs[gpu][k];
        memset(m, 0, sizeof *m);
        m->slot = gpu;
        m->mig = k < count ? k : -1;
        if (k >= count) continue;
        snprintf(m->uuid, sizeof m->uuid, "MIG-%08x-%04x-0000-0000-%012x", gpu, k, k);
        snprintf(m->name, sizeof m->name, "NVIDIA GB300 MIG 1g.35gb");
        m->v.mem_total = 35 * 1024 * MIB;
        m->v.gpu_instance_id = k + 1;
        m->v.compute_instance_id = 0;
    }
    return 0;
}

/* Delivers an event to every event set registered for that type on that GPU; returns how many
 * sets got it (0 means nobody was listening). GPU -1: an event with no device (a NULL handle),
 * for every set registered for that type on any GPU. */
API int fake_nvml_inject_event(int gpu, unsigned long long type, unsigned long long data) {
    struct nvmlDevice_st *g = gpu == -1 ? NULL : slot_ptr(gpu);
    if (!g && gpu != -1) return -2;
    int delivered = 0;
    pthread_mutex_lock(&ev_lock);
    for (int i = 0; i < MAX_SETS; i++) {
        struct nvmlEventSet_st *s = &sets[i];
        unsigned long long mask = 0;
        for (int k = 0; k < MAX_GPUS; k++) mask |= gpu == -1 || k == gpu ? s->mask[k] : 0;
        if (!s->used || !(mask & type) || s->count == QUEUE_LEN) continue;
        nvmlEventData_t *e = &s->queue[(s->head + s->count) % QUEUE_LEN];
        e->device = g;
        e->eventType = type;
        e->eventData = type == EVENT_XID ? data : 0;
        e->gpuInstanceId = e->computeInstanceId = 0xFFFFFFFFU;
        s->count++;
        delivered++;
    }
    pthread_cond_broadcast(&ev_cond);
    pthread_mutex_unlock(&ev_lock);
    return delivered;
}

/* Events queued and not yet taken by nvmlEventSetWait_v2, over all sets. */
API int fake_nvml_pending_events(void) {
    int n = 0;
    pthread_mutex_lock(&ev_lock);
    for (int i = 0; i < MAX_SETS; i++) n += sets[i].used ? sets[i].count : 0;
    pthread_mutex_unlock(&ev_lock);
    return n;
}

API int fake_nvml_init_count(void) { return init_count; }

/* How many times the C function `fn` was called since the last reset. */
API long fake_nvml_calls(const char *fn) {
    long n = 0;
    pthread_mutex_lock(&calls_lock);
    for (int i = 0; i < MAX_COUNTED && calls[i].fn; i++)
        if (strcmp(calls[i].fn, fn) == 0) n = calls[i].count;
    pthread_mutex_unlock(&calls_lock);
    return n;
}

/* ---- layout, checked against the real nvml.h -------------------------------------------- */

static const struct { const char *name; long value; } layout[] = {
#define LAYOUT_SIZE(T) {#T, (long)sizeof(T)},
#define LAYOUT_OFFSET(T, F) {#T "." #F, (long)offsetof(T, F)},
#include "layout.h"
#undef LAYOUT_SIZE
#undef LAYOUT_OFFSET
};

API const char *fake_nvml_layout_name(int i) {
    return i >= 0 && i < (int)(sizeof layout / sizeof *layout) ? layout[i].name : NULL;
}

API long fake_nvml_layout_value(int i) {
    return i >= 0 && i < (int)(sizeof layout / sizeof *layout) ? layout[i].value : -1;
}

/*
 * virtkit-internal.h — the C ABI of virtkit's internal API, version 1.0.
 *
 * A native plugin is a shared library (.so) that supplies handlers for virtkit's privileged
 * operations, for programs written in C or any language that can export a C function. List its
 * absolute path in connect()'s `plugins` option or in `<root>/etc/virtkit.json`; the driver loads
 * it (dlopen) when the connection opens and calls the one symbol it must export:
 *
 *     int virtkit_plugin_init(struct virtkit_registrar *reg);
 *
 * virtkit_plugin_init runs once, on the driver's thread, and must, in this order:
 *   1. state the API version it was compiled against:  VIRTKIT_PLUGIN_DECLARE_VERSION(reg);
 *      The driver applies the same rule as openInternal(): MAJOR.MINOR must equal its own exactly,
 *      or the connection fails with INTERNAL_VERSION_MISMATCH naming both versions. Registration
 *      calls made without a successful declaration fail with -EPROTO.
 *   2. register its handlers, one call per operation (reg->set_max_mem_lock(...), …). A second
 *      handler for one operation — from this plugin, another plugin, or setHandler — fails the
 *      connection with HANDLER_ALREADY_REGISTERED.
 *   3. return 0, or a negative errno to refuse loading (the connection fails with HANDLER_FAILED).
 * Do not keep `reg`: it is valid only during virtkit_plugin_init.
 *
 * Handlers.
 *   - Every handler returns 0 on success or a negative errno (-EPERM, …) on failure; on failure it
 *     may write a NUL-terminated message into ctx->error (see virtkit_set_error). The driver fails
 *     the operation with HANDLER_FAILED carrying that message, and rolls the domain back.
 *   - Handlers run on worker threads, never on the driver's (JavaScript) thread: a slow handler
 *     does not block the driver, but handlers of different domains may run concurrently, so they
 *     must be thread-safe.
 *   - Every call has a deadline (ctx->deadline_ns, CLOCK_MONOTONIC) — the timeout given at
 *     registration, or 30 s when 0. When it passes, or the domain is destroyed meanwhile, the
 *     driver sets ctx->cancelled, fails the operation (OPERATION_TIMEOUT) and rolls the domain
 *     back without waiting. Poll virtkit_cancelled(ctx) in long work and return -ECANCELED. Until a
 *     cancelled call has returned, the driver calls no handler of this plugin again (those
 *     operations fail at once with HANDLER_FAILED).
 *   - All memory behind ctx, args and result belongs to the driver and stays valid until the
 *     handler returns — also after cancellation. Do not keep pointers to it afterwards.
 *   - The driver checks results exactly as for JavaScript handlers: against the operation's
 *     schema, then from outside (/proc/<pid>/limits, sched_getscheduler, /proc/<pid>/task/<tid>/cgroup,
 *     fstat of returned descriptors). A handler that claims success without the effect fails the
 *     operation with POSTCONDITION_FAILED.
 *   - Descriptors returned (storage.openFile, net.openTap) are opened in the driver's own process
 *     (the plugin runs in it) and are handed over: the driver closes them when done.
 *
 * Versioning. This header describes exactly one internal API version. Any change to a structure,
 * an enum value or a signature below bumps VIRTKIT_INTERNAL_API_MINOR (or MAJOR) together with the
 * JavaScript internal API, and is listed in the "Internal" sections of virtkit's CHANGELOG.md.
 * Only the first three members of struct virtkit_registrar are frozen across all versions, so that
 * a plugin built against any version can state it and be refused cleanly.
 * The _Static_asserts at the end pin the layout; the driver checks the same sizes when it loads.
 */
#ifndef VIRTKIT_INTERNAL_H
#define VIRTKIT_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The internal API version this header describes. Pass it back, as VIRTKIT_PLUGIN_DECLARE_VERSION does. */
#define VIRTKIT_INTERNAL_API_MAJOR 1
#define VIRTKIT_INTERNAL_API_MINOR 0
#define VIRTKIT_INTERNAL_API_VERSION "1.0"

/* Sizes of the fixed character buffers below, terminating NUL included. */
#define VIRTKIT_UUID_SIZE 40      /* a 36-character uuid */
#define VIRTKIT_NAME_SIZE 256     /* a domain name (at most 200 characters) */
#define VIRTKIT_PHASE_SIZE 16
#define VIRTKIT_PATH_SIZE 4096    /* a file path or a cgroup path */
#define VIRTKIT_CPUSET_SIZE 256   /* a cpuset list such as "0-3,8" */
#define VIRTKIT_TEXT_SIZE 256     /* an explanation */
#define VIRTKIT_IFNAME_SIZE 16    /* IFNAMSIZ */
#define VIRTKIT_ERROR_SIZE 1024
#define VIRTKIT_MAX_QUEUES 16

/* A resource limit value meaning "unlimited" (RLIM_INFINITY). */
#define VIRTKIT_LIMIT_UNLIMITED UINT64_MAX

/* The moments of a domain's life at which the driver invokes handlers. */
enum virtkit_phase {
  VIRTKIT_PHASE_PRE_EXEC = 0,     /* before QEMU runs (pid 0 for descriptors, the stub's pid for memlock) */
  VIRTKIT_PHASE_STARTUP = 1,      /* QEMU runs with every vCPU paused; no guest code has run */
  VIRTKIT_PHASE_MIGRATION_IN = 2, /* the same moment on the destination of a live migration */
  VIRTKIT_PHASE_HOTPLUG = 3,
  VIRTKIT_PHASE_RELEASE = 4,      /* QEMU has exited */
  VIRTKIT_PHASE_RECONNECT = 5     /* a new driver found QEMU gone */
};

/* The role of a QEMU thread, as the driver learnt it from QMP (never from the thread's name). */
enum virtkit_role { VIRTKIT_ROLE_VCPU = 0, VIRTKIT_ROLE_IOTHREAD = 1, VIRTKIT_ROLE_EMULATOR = 2 };

/* Scheduling policies: the kernel's SCHED_* numbers, so they can go to sched_setscheduler as is. */
enum virtkit_policy {
  VIRTKIT_POLICY_OTHER = 0,
  VIRTKIT_POLICY_FIFO = 1,
  VIRTKIT_POLICY_RR = 2,
  VIRTKIT_POLICY_BATCH = 3,
  VIRTKIT_POLICY_IDLE = 5
};

/* How the driver computed a locked-memory need (libvirt's rules). */
enum virtkit_memlock_rule {
  VIRTKIT_MEMLOCK_HARD_LIMIT = 0,  /* memtune hard_limit */
  VIRTKIT_MEMLOCK_LOCKED = 1,      /* memoryBacking locked without a hard_limit: unlimited */
  VIRTKIT_MEMLOCK_PASSTHROUGH = 2  /* N x guest memory + 1 GiB for VFIO/NVMe/vDPA devices */
};

enum virtkit_open_mode { VIRTKIT_OPEN_READ = 0, VIRTKIT_OPEN_READ_WRITE = 1 };

/* The context of every invocation: which domain, which moment, the deadline, the cancellation. */
struct virtkit_context {
  char domain_uuid[VIRTKIT_UUID_SIZE];
  char domain_name[VIRTKIT_NAME_SIZE];
  int64_t domain_id;            /* the driver's id of the running domain; -1 before it has one */
  int32_t phase;                /* enum virtkit_phase */
  int32_t pid;                  /* the QEMU (or stub) process; 0 before it exists */
  uint64_t deadline_ns;         /* CLOCK_MONOTONIC nanoseconds after which the driver stops waiting */
  volatile int32_t cancelled;   /* set non-zero by the driver; read it with virtkit_cancelled() */
  int32_t reserved;
  char error[VIRTKIT_ERROR_SIZE]; /* out: a message when the handler fails */
};

/* ---- process.setMaxMemLock (phases pre-exec, hotplug, migration-in) -------------------------- */
/* Raise RLIMIT_MEMLOCK (soft and hard) of `pid` to at least `bytes`. Checked: /proc/<pid>/limits. */
struct virtkit_mem_lock_args {
  int32_t pid;
  int32_t rule;                 /* enum virtkit_memlock_rule */
  uint64_t bytes;               /* VIRTKIT_LIMIT_UNLIMITED for unlimited */
  uint64_t current_soft;        /* the limits the driver read before calling */
  uint64_t current_hard;
  uint64_t guest_memory_bytes;
  uint64_t hard_limit_bytes;    /* meaningful when rule == VIRTKIT_MEMLOCK_HARD_LIMIT, else 0 */
  uint32_t passthrough_devices;
  uint32_t reserved;
  char explanation[VIRTKIT_TEXT_SIZE];
};
typedef int (*virtkit_set_max_mem_lock_fn)(void *user_data, struct virtkit_context *ctx,
                                           const struct virtkit_mem_lock_args *args);

/* ---- thread.setScheduler (phases startup, migration-in, hotplug) ------------------------------ */
/* Apply policy/priority to each thread. Checked: sched_getscheduler/sched_getparam per thread. */
struct virtkit_sched_thread {
  int32_t tid;
  int32_t role;                 /* enum virtkit_role */
  uint32_t index;               /* vCPU or iothread index; 0 for emulator threads */
  int32_t policy;               /* enum virtkit_policy */
  int32_t priority;             /* 1..99 for FIFO and RR, else 0 */
};
struct virtkit_sched_args {
  int32_t pid;
  uint32_t n_threads;
  const struct virtkit_sched_thread *threads;
};
typedef int (*virtkit_set_scheduler_fn)(void *user_data, struct virtkit_context *ctx,
                                        const struct virtkit_sched_args *args);

/* ---- cgroup.placeThreads (phases startup, migration-in, hotplug) ------------------------------ */
/* Place every thread into a cgroup; report each placement. Checked: /proc/<pid>/task/<tid>/cgroup. */
struct virtkit_thread {
  int32_t tid;
  int32_t role;                 /* enum virtkit_role */
  uint32_t index;
};
struct virtkit_cpuset {
  uint32_t index;               /* vCPU or iothread index */
  char cpuset[VIRTKIT_CPUSET_SIZE];
};
struct virtkit_placement {
  int32_t tid;
  char cgroup[VIRTKIT_PATH_SIZE]; /* path relative to the hierarchy's root, starting with "/" */
};
struct virtkit_place_args {
  int32_t pid;
  uint32_t n_threads;
  const struct virtkit_thread *threads;
  char emulator_cpuset[VIRTKIT_CPUSET_SIZE]; /* "" when the domain pins no emulator threads */
  uint32_t n_vcpu_cpusets;
  uint32_t n_iothread_cpusets;
  const struct virtkit_cpuset *vcpu_cpusets;
  const struct virtkit_cpuset *iothread_cpusets;
};
struct virtkit_place_result {
  uint32_t n_placements;        /* out: how many entries of `placements` were filled */
  uint32_t capacity;            /* in: room in `placements` (== n_threads) */
  struct virtkit_placement *placements;
};
typedef int (*virtkit_place_threads_fn)(void *user_data, struct virtkit_context *ctx,
                                        const struct virtkit_place_args *args,
                                        struct virtkit_place_result *result);

/* ---- cgroup.release (phases hotplug, release, reconnect) -------------------------------------- */
/* Give back what placeThreads made. release, reconnect: QEMU has exited, everything goes. hotplug:
 * vCPUs were taken away from the running QEMU (their threads have exited); only the groups of
 * these placements go. Not checked. */
struct virtkit_release_args {
  int32_t pid;
  uint32_t n_placements;
  const struct virtkit_placement *placements;
};
typedef int (*virtkit_release_cgroups_fn)(void *user_data, struct virtkit_context *ctx,
                                          const struct virtkit_release_args *args);

/* ---- net.openTap (phases pre-exec, hotplug) --------------------------------------------------- */
/* Open `queues` descriptors of a TAP device. Checked: TUNGETIFF on each fd names the TAP. */
struct virtkit_tap_args {
  char ifname[VIRTKIT_IFNAME_SIZE]; /* "" lets the handler (kernel) choose a name */
  uint32_t queues;              /* 1..VIRTKIT_MAX_QUEUES */
  int32_t vnet_hdr;             /* non-zero: IFF_VNET_HDR */
  int32_t managed;              /* 0 (managed='no'): attach to the existing TAP `ifname`; else create the
                                   TAP exclusively (IFF_TUN_EXCL), never attach to one that exists */
};
struct virtkit_tap_result {
  char ifname[VIRTKIT_IFNAME_SIZE]; /* out: the device's name */
  uint32_t n_fds;               /* out: == queues */
  int32_t fds[VIRTKIT_MAX_QUEUES];
};
typedef int (*virtkit_open_tap_fn)(void *user_data, struct virtkit_context *ctx,
                                   const struct virtkit_tap_args *args, struct virtkit_tap_result *result);

/* ---- storage.openFile (phases pre-exec, hotplug) ---------------------------------------------- */
/* Open `path` for QEMU. Checked: fstat(fd) is that file, opened with that access mode. */
struct virtkit_open_file_args {
  char path[VIRTKIT_PATH_SIZE];
  int32_t mode;                 /* enum virtkit_open_mode */
};
struct virtkit_open_file_result {
  int32_t fd;                   /* out */
};
typedef int (*virtkit_open_file_fn)(void *user_data, struct virtkit_context *ctx,
                                    const struct virtkit_open_file_args *args,
                                    struct virtkit_open_file_result *result);

/*
 * What the driver passes to virtkit_plugin_init. Each registration call takes the handler, an
 * opaque pointer handed back to it on every call, and its timeout in milliseconds (0: 30 000).
 * Each returns 0, or -EPROTO (no version declared), -EINVAL (NULL handler) or -EEXIST (the
 * operation has a handler already; the connection will fail with HANDLER_ALREADY_REGISTERED).
 */
struct virtkit_registrar {
  /* Frozen across every API version. */
  uint32_t struct_size;                      /* sizeof(struct virtkit_registrar) of the driver */
  char host_api_version[VIRTKIT_PHASE_SIZE]; /* the internal API the driver implements, e.g. "1.0" */
  int (*declare_api_version)(struct virtkit_registrar *reg, const char *api_version);

  /* Internal API 1.0: one registration call per operation. */
  int (*set_max_mem_lock)(struct virtkit_registrar *reg, virtkit_set_max_mem_lock_fn fn, void *user_data,
                          uint32_t timeout_ms);
  int (*set_scheduler)(struct virtkit_registrar *reg, virtkit_set_scheduler_fn fn, void *user_data,
                       uint32_t timeout_ms);
  int (*place_threads)(struct virtkit_registrar *reg, virtkit_place_threads_fn fn, void *user_data,
                       uint32_t timeout_ms);
  int (*release_cgroups)(struct virtkit_registrar *reg, virtkit_release_cgroups_fn fn, void *user_data,
                         uint32_t timeout_ms);
  int (*open_tap)(struct virtkit_registrar *reg, virtkit_open_tap_fn fn, void *user_data,
                  uint32_t timeout_ms);
  int (*open_file)(struct virtkit_registrar *reg, virtkit_open_file_fn fn, void *user_data,
                   uint32_t timeout_ms);
};

/* The one symbol a plugin exports. */
int virtkit_plugin_init(struct virtkit_registrar *reg);

/* States the version this plugin was compiled against; call first in virtkit_plugin_init. */
#define VIRTKIT_PLUGIN_DECLARE_VERSION(reg) ((reg)->declare_api_version((reg), VIRTKIT_INTERNAL_API_VERSION))

/* Non-zero once the driver has given up on this call (deadline passed, domain destroyed). */
static inline int virtkit_cancelled(const struct virtkit_context *ctx) {
  return __atomic_load_n(&ctx->cancelled, __ATOMIC_ACQUIRE) != 0;
}

/* Nanoseconds left before the deadline (0 once it has passed). */
static inline uint64_t virtkit_remaining_ns(const struct virtkit_context *ctx) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  uint64_t t = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
  return t >= ctx->deadline_ns ? 0 : ctx->deadline_ns - t;
}

/* Writes a failure message for the driver (printf-style) and returns `err` (a negative errno). */
static inline int virtkit_set_error(struct virtkit_context *ctx, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int virtkit_set_error(struct virtkit_context *ctx, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
  va_end(ap);
  return err;
}

/* The layout of internal API 1.0 on LP64 (x86_64, aarch64), checked again by the driver at load. */
#if defined(__LP64__)
_Static_assert(sizeof(struct virtkit_context) == 1352, "virtkit_context layout");
_Static_assert(sizeof(struct virtkit_mem_lock_args) == 312, "virtkit_mem_lock_args layout");
_Static_assert(sizeof(struct virtkit_sched_thread) == 20, "virtkit_sched_thread layout");
_Static_assert(sizeof(struct virtkit_sched_args) == 16, "virtkit_sched_args layout");
_Static_assert(sizeof(struct virtkit_thread) == 12, "virtkit_thread layout");
_Static_assert(sizeof(struct virtkit_cpuset) == 260, "virtkit_cpuset layout");
_Static_assert(sizeof(struct virtkit_placement) == 4100, "virtkit_placement layout");
_Static_assert(sizeof(struct virtkit_place_args) == 296, "virtkit_place_args layout");
_Static_assert(sizeof(struct virtkit_place_result) == 16, "virtkit_place_result layout");
_Static_assert(sizeof(struct virtkit_release_args) == 16, "virtkit_release_args layout");
_Static_assert(sizeof(struct virtkit_tap_args) == 28, "virtkit_tap_args layout");
_Static_assert(sizeof(struct virtkit_tap_result) == 84, "virtkit_tap_result layout");
_Static_assert(sizeof(struct virtkit_open_file_args) == 4100, "virtkit_open_file_args layout");
_Static_assert(sizeof(struct virtkit_open_file_result) == 4, "virtkit_open_file_result layout");
_Static_assert(sizeof(struct virtkit_registrar) == 80, "virtkit_registrar layout");
#endif

#ifdef __cplusplus
}
#endif

#endif /* VIRTKIT_INTERNAL_H */

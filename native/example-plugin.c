/*
 * example-plugin.c — a complete virtkit native plugin (internal API 1.0).
 *
 * It supplies three privileged operations the way a node agent would, each with the system call
 * virtkit's own fallback uses:
 *   process.setMaxMemLock  prlimit(RLIMIT_MEMLOCK) on the (not yet exec'd) QEMU process
 *   thread.setScheduler    sched_setscheduler() on each vCPU/iothread id the driver verified
 *   storage.openFile       open() of a disk image, returned as a descriptor
 * A real agent would authorise each request first (the target pid belongs to its pod, the path is
 * under an allowed prefix, the priority is in range) — see virtkit-privd's policy for the rules —
 * or forward it to a privileged service; the shape stays the same.
 *
 * Build:   cc -shared -fPIC -O2 -Wall -Wextra -I<virtkit>/native -o example-plugin.so example-plugin.c
 * Use:     connect('qemu:///embed?root=…', { plugins: ['/abs/path/example-plugin.so'] })
 *          or { "plugins": ["/abs/path/example-plugin.so"] } in <root>/etc/virtkit.json
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "virtkit-internal.h"

static const char *phase_name(int32_t phase) {
  switch (phase) {
    case VIRTKIT_PHASE_PRE_EXEC: return "pre-exec";
    case VIRTKIT_PHASE_STARTUP: return "startup";
    case VIRTKIT_PHASE_MIGRATION_IN: return "migration-in";
    case VIRTKIT_PHASE_HOTPLUG: return "hotplug";
    default: return "another phase";
  }
}

static int set_max_mem_lock(void *user_data, struct virtkit_context *ctx,
                            const struct virtkit_mem_lock_args *args) {
  (void)user_data;
  struct rlimit limit;
  limit.rlim_cur = args->bytes == VIRTKIT_LIMIT_UNLIMITED ? RLIM_INFINITY : (rlim_t)args->bytes;
  limit.rlim_max = limit.rlim_cur;
  if (prlimit(args->pid, RLIMIT_MEMLOCK, &limit, NULL) != 0) {
    int err = errno;
    return virtkit_set_error(ctx, -err, "example plugin: prlimit(%d, RLIMIT_MEMLOCK, %llu) for domain %s (%s): %s",
                             args->pid, (unsigned long long)args->bytes, ctx->domain_name,
                             phase_name(ctx->phase), strerror(err));
  }
  return 0;
}

static int set_scheduler(void *user_data, struct virtkit_context *ctx, const struct virtkit_sched_args *args) {
  (void)user_data;
  for (uint32_t i = 0; i < args->n_threads; i++) {
    if (virtkit_cancelled(ctx)) return virtkit_set_error(ctx, -ECANCELED, "example plugin: cancelled");
    const struct virtkit_sched_thread *t = &args->threads[i];
    struct sched_param param = {.sched_priority = t->priority};
    if (sched_setscheduler(t->tid, t->policy, &param) != 0) {
      int err = errno;
      return virtkit_set_error(ctx, -err, "example plugin: sched_setscheduler(%d, %d, %d) of %s %u: %s", t->tid,
                               t->policy, t->priority, t->role == VIRTKIT_ROLE_VCPU ? "vcpu" : "iothread",
                               t->index, strerror(err));
    }
  }
  return 0;
}

static int open_file(void *user_data, struct virtkit_context *ctx, const struct virtkit_open_file_args *args,
                     struct virtkit_open_file_result *result) {
  (void)user_data;
  if (args->path[0] != '/') return virtkit_set_error(ctx, -EINVAL, "example plugin: %s is not absolute", args->path);
  int flags = (args->mode == VIRTKIT_OPEN_READ ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY;
  int fd = open(args->path, flags);
  if (fd < 0) {
    int err = errno;
    return virtkit_set_error(ctx, -err, "example plugin: open(%s): %s", args->path, strerror(err));
  }
  result->fd = fd;
  return 0;
}

int virtkit_plugin_init(struct virtkit_registrar *reg) {
  int rc = VIRTKIT_PLUGIN_DECLARE_VERSION(reg);
  if (rc != 0) return rc;
  if ((rc = reg->set_max_mem_lock(reg, set_max_mem_lock, NULL, 10000)) != 0) return rc;
  if ((rc = reg->set_scheduler(reg, set_scheduler, NULL, 10000)) != 0) return rc;
  if ((rc = reg->open_file(reg, open_file, NULL, 10000)) != 0) return rc;
  return 0;
}

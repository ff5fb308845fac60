#!/usr/bin/python3
"""libvirt's embedded QEMU driver as a benchmark contender, driven by bench/run.ts.

One long-lived process holds one `qemu:///embed?root=...` connection (the driver lives in this
process, as virtkit's lives in the node process) and answers one JSON command per stdin line with
one JSON line on stdout, so the node runner can alternate it with the other contenders. Timings
are wall time (time.perf_counter) around the libvirt call only, as the node side times virtkit's
calls.

Commands: {"cmd": "start"} / {"cmd": "destroy"} -> {"ms": ...}
          {"cmd": "count"}   -> {"ms": ..., "qmp": N, "commands": {name: n}} (needs --count-log)
          {"cmd": "scale", "n": 32} -> {"startMs", "destroyMs", "peakRssKiB", "baseRssKiB"}
          {"cmd": "start-paused", "n": 100} -> {"ms"}: n more domains defined and started paused
          {"cmd": "leave"}   -> {"left": true}, then exits at once, leaving every QEMU running
                                (as a killed manager would): the next process on the root adopts them
          {"cmd": "adopt", "n": 100} -> {"listMs", "resumeMs", "adopted"}: the active domains this
                                process's open() found, each resumed (which waits for libvirt's
                                reconnect of it), then all destroyed
          {"cmd": "quit"}
Errors are answered as {"error": "..."}. On EOF or SIGTERM every domain is destroyed and undefined.
"""

import argparse
import concurrent.futures
import json
import os
import re
import signal
import sys
import threading
import time

import libvirt

parser = argparse.ArgumentParser()
parser.add_argument("--root", required=True)
parser.add_argument("--accel", choices=["kvm", "tcg"], required=True)
parser.add_argument("--prefix", required=True)
parser.add_argument("--memory-kib", type=int, default=65536)
parser.add_argument("--vcpus", type=int, default=2)
parser.add_argument("--emulator", default="/usr/bin/qemu-system-x86_64")
parser.add_argument("--count-log", default=None,
                    help="the file LIBVIRT_LOG_OUTPUTS writes to (set by the caller)")
opts = parser.parse_args()

os.makedirs(os.path.join(opts.root, "etc"), exist_ok=True)
with open(os.path.join(opts.root, "etc", "qemu.conf"), "w") as f:
    f.write('user = "root"\ngroup = "root"\nstdio_handler = "file"\n')


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def ignore_errors(*_args):
    pass


libvirt.registerErrorHandler(ignore_errors, None)
libvirt.virEventRegisterDefaultImpl()


def event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


threading.Thread(target=event_loop, daemon=True).start()


def domain_xml(name):
    # Same shape as virtkit's and the raw floor's: no USB, no balloon, ACPI on, firmware only.
    return f"""<domain type='{'kvm' if opts.accel == 'kvm' else 'qemu'}'>
  <name>{name}</name>
  <memory unit='KiB'>{opts.memory_kib}</memory>
  <vcpu>{opts.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{opts.emulator}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>"""


t0 = time.perf_counter()
conn = libvirt.open(f"qemu:///embed?root={opts.root}")
open_ms = (time.perf_counter() - t0) * 1000
domains = {}


def get_domain(name):
    if name not in domains:
        try:
            # Defined by an earlier process on this root (the reconnect measure).
            domains[name] = conn.lookupByName(name)
        except libvirt.libvirtError:
            domains[name] = conn.defineXML(domain_xml(name))
    return domains[name]


main = get_domain(f"{opts.prefix}-lv")


def status_kib(field):
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else 0


def cleanup():
    for dom in list(domains.values()):
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            pass
        try:
            dom.undefine()
        except libvirt.libvirtError:
            pass
    domains.clear()
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def on_term(_sig, _frame):
    cleanup()
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
# A terminal's Ctrl-C reaches the whole process group: the runner coordinates the clean-up (quit,
# or end of stdin when it died), so this process must not die half-way on its own.
signal.signal(signal.SIGINT, signal.SIG_IGN)


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def start_paused(n):
    doms = [get_domain(f"{opts.prefix}-lvrc-{i}") for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(n, 32)) as pool:
        t = time.perf_counter()
        list(pool.map(lambda d: d.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED), doms))
        return {"ms": (time.perf_counter() - t) * 1000}


def adopt(n):
    t = time.perf_counter()
    active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    list_ms = (time.perf_counter() - t) * 1000
    for d in active:
        domains[d.name()] = d
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(max(len(active), 1), 32)) as pool:
        t = time.perf_counter()
        list(pool.map(lambda d: d.resume(), active))
        resume_ms = (time.perf_counter() - t) * 1000
        list(pool.map(lambda d: d.destroy(), active))
    if len(active) != n:
        raise RuntimeError(f"libvirt adopted {len(active)} of {n} domains")
    return {"listMs": list_ms, "resumeMs": resume_ms, "adopted": len(active)}


def count_start():
    """One start with the monitor traced: the QMP commands libvirt sent during it."""
    size = os.path.getsize(opts.count_log) if os.path.exists(opts.count_log) else 0
    ms = timed(main.create)
    time.sleep(0.05)  # the log is written by libvirt's threads; let it settle
    with open(opts.count_log, "rb") as f:
        f.seek(size)
        text = f.read().decode("utf-8", "replace")
    names = re.findall(r'QEMU_MONITOR_SEND_MSG:.*?"execute":"([^"]+)"', text)
    commands = {}
    for n in names:
        commands[n] = commands.get(n, 0) + 1
    return {"ms": ms, "qmp": len(names), "commands": commands}


def scale(n):
    doms = [get_domain(f"{opts.prefix}-lvscale-{i}") for i in range(n)]
    base = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        t = time.perf_counter()
        started = list(pool.map(lambda d: d.create(), doms))
        start_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        list(pool.map(lambda d: d.destroy(), doms))
        destroy_ms = (time.perf_counter() - t) * 1000
    del started
    return {"n": n, "startMs": start_ms, "destroyMs": destroy_ms,
            "peakRssKiB": status_kib("VmHWM"), "baseRssKiB": base}


reply({"ready": True, "openMs": open_ms, "libvirt": conn.getLibVersion(), "pid": os.getpid()})

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        req = json.loads(line)
        cmd = req.get("cmd")
        if cmd == "start":
            reply({"ms": timed(main.create)})
        elif cmd == "destroy":
            reply({"ms": timed(main.destroy)})
        elif cmd == "count":
            reply(count_start())
        elif cmd == "scale":
            reply(scale(int(req.get("n", 32))))
        elif cmd == "start-paused":
            reply(start_paused(int(req.get("n", 100))))
        elif cmd == "adopt":
            reply(adopt(int(req.get("n", 100))))
        elif cmd == "leave":
            reply({"left": True})
            os._exit(0)
        elif cmd == "quit":
            break
        else:
            reply({"error": f"unknown command {cmd!r}"})
    except Exception as err:  # noqa: BLE001 - reported to the runner, which fails the run
        reply({"error": f"{type(err).__name__}: {err}"})

cleanup()
reply({"bye": True})

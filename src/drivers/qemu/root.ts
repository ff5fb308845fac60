import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { isAbsolute, join, normalize } from 'node:path';
import { ErrorCode, errnoOf, errorMessage, VirtError } from '../../errors.js';
import { flockTry } from '../../util/libc.js';

/**
 * The embedded root's layout, as in libvirt's embed mode: persistent state in `etc`, running
 * state in `run`, logs in `log`, data in `lib`.
 */
export interface RootLayout {
  readonly root: string;
  readonly etc: string;
  readonly domains: string;
  readonly run: string;
  readonly log: string;
  readonly lib: string;
}

/** Paths belonging to one domain. */
export interface DomainPaths {
  readonly definition: string;
  readonly status: string;
  readonly monitor: string;
  readonly log: string;
  readonly console: string;
}

/** Validates the root of an embed URI and returns its layout (not yet created). */
export function rootLayout(root: string | null): RootLayout {
  if (!root) {
    throw new VirtError(
      ErrorCode.INVALID_URI,
      "the embedded driver needs a root: 'qemu:///embed?root=/abs/path'",
    );
  }
  if (!isAbsolute(root)) {
    throw new VirtError(ErrorCode.INVALID_URI, `the root '${root}' must be an absolute path`, { path: root });
  }
  const r = normalize(root).replace(/\/+$/, '') || '/';
  return {
    root: r,
    etc: join(r, 'etc'),
    domains: join(r, 'etc', 'domains'),
    run: join(r, 'run'),
    log: join(r, 'log'),
    lib: join(r, 'lib'),
  };
}

/** Paths of the domain `name` with `uuid`. Sockets are named by uuid to stay under the 108-byte limit. */
export function domainPaths(layout: RootLayout, name: string, uuid: string): DomainPaths {
  return {
    definition: join(layout.domains, `${name}.json`),
    status: join(layout.run, `${name}.json`),
    monitor: join(layout.run, `${uuid}.qmp`),
    log: join(layout.log, `${name}.log`),
    console: join(layout.log, `${name}.console.log`),
  };
}

/** The held lock of a root: one driver per root, across processes and within one. */
export interface RootLock {
  release(): void;
}

/** Creates the layout and takes the root's lock, or throws ROOT_LOCKED naming the holder. */
export function lockRoot(layout: RootLayout): RootLock {
  try {
    for (const dir of [layout.root, layout.etc, layout.domains, layout.run, layout.log, layout.lib]) {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
    }
  } catch (err) {
    throw new VirtError(
      ErrorCode.SYSTEM_ERROR,
      `cannot create the root ${layout.root}: ${errorMessage(err)}`,
      {
        path: layout.root,
        errno: errnoOf(err),
      },
    );
  }
  const lockPath = join(layout.run, 'driver.lock');
  const fd = openSync(lockPath, 'a+', 0o644);
  let acquired = false;
  try {
    acquired = flockTry(fd);
  } catch (err) {
    closeSync(fd);
    throw new VirtError(ErrorCode.SYSTEM_ERROR, `cannot lock ${lockPath}: ${errorMessage(err)}`, {
      path: lockPath,
    });
  }
  if (!acquired) {
    closeSync(fd);
    const holder = Number.parseInt(readFileSync(lockPath, 'utf8').trim(), 10);
    const pid = Number.isFinite(holder) ? holder : undefined;
    throw new VirtError(
      ErrorCode.ROOT_LOCKED,
      `the root ${layout.root} is in use by another virtkit driver${pid ? ` (pid ${pid})` : ''}; close that connection first`,
      { path: layout.root, pid },
    );
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  return {
    release: () => {
      try {
        ftruncateSync(fd, 0);
      } finally {
        closeSync(fd);
      }
    },
  };
}

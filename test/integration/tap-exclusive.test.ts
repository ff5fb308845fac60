/*
 * Issue 11, defect 10 (driver side): a managed TAP is created exclusively, never attached to a
 * device that already exists under its name; only `managed='no'` uses an existing TAP, and
 * handlers are told which one it is.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openInternal } from '../../src/internal/index.js';
import type { Connection } from '../../src/stable/index.js';
import { openTap } from '../../src/util/tap.js';
import { openRoot, pausedOnly, removeRoot, tempRoot } from '../helpers/env.js';
import { leftovers, NOTHING_LEFT, virtErrorOf } from '../helpers/hostile.js';

const tag = `${process.pid % 100000}`;
const created: string[] = [];
let root: string;
let conn: Connection;

function precreate(name: string): void {
  execFileSync('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap'], { stdio: 'pipe' });
  created.push(name);
}

beforeAll(async () => {
  root = tempRoot('vk-tap-');
  conn = await openRoot(root);
});
afterEach(() => {
  for (const name of created.splice(0)) {
    if (existsSync(`/sys/class/net/${name}`)) execFileSync('ip', ['link', 'del', name], { stdio: 'pipe' });
  }
});
afterAll(async () => {
  await conn.close();
  removeRoot(root);
});

function tunFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/net/tun';
    } catch {
      return false;
    }
  }).length;
}

describe('built-in net.openTap', () => {
  it('refuses to reuse an existing TAP for a managed interface, and leaves it alone', async () => {
    const name = `vkx${tag}`;
    precreate(name);
    const dom = await conn.defineDomain({
      ...pausedOnly(`tapx-${tag}`),
      interfaces: [{ type: 'ethernet', target: { dev: name } }],
    });
    const err = await virtErrorOf(() => dom.start({ paused: true }));
    expect(err.code).toBe('OPERATION_FAILED');
    expect(err.details).toMatchObject({ operation: 'net.openTap', ifname: name });
    expect(err.message).toMatch(/managed='no'/);
    expect(existsSync(`/sys/class/net/${name}`)).toBe(true);
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
    await dom.undefine();
  });

  it("attaches to the existing TAP of a managed='no' interface", async () => {
    const name = `vkn${tag}`;
    precreate(name);
    const dom = await conn.defineDomain({
      ...pausedOnly(`tapn-${tag}`),
      interfaces: [{ type: 'ethernet', target: { dev: name, managed: false } }],
    });
    await dom.start({ paused: true });
    const { pid } = await dom.getInfo();
    expect(tunFds(pid as number)).toBe(1);
    await dom.destroy();
    expect(await leftovers(root, dom.uuid)).toEqual(NOTHING_LEFT);
    await dom.undefine();
  });
});

describe('a net.openTap handler', () => {
  it('is told whether the interface is managed', async () => {
    const hroot = tempRoot('vk-tap-h-');
    const hconn = await openRoot(hroot);
    try {
      const seen: Array<{ ifname?: string; managed: boolean }> = [];
      openInternal(hconn, { apiVersion: '1.0' }).setHandler('net.openTap', (_ctx, args) => {
        seen.push({ ifname: args.ifname, managed: args.managed });
        return openTap(args.ifname, { queues: args.queues, vnetHdr: args.vnetHdr, exclusive: args.managed });
      });
      const existing = `vkh${tag}`;
      const fresh = `vkf${tag}`;
      precreate(existing);
      created.push(fresh);
      const dom = await hconn.defineDomain({
        ...pausedOnly(`taph-${tag}`),
        interfaces: [
          { type: 'ethernet', target: { dev: existing, managed: false } },
          { type: 'ethernet', target: { dev: fresh } },
        ],
      });
      await dom.start({ paused: true });
      expect(seen).toEqual([
        { ifname: existing, managed: false },
        { ifname: fresh, managed: true },
      ]);
      await dom.destroy();
      await dom.undefine();
    } finally {
      await hconn.close();
      removeRoot(hroot);
    }
  });
});

import { ErrorCode, VirtError } from '../../../errors.js';
import { isPciRoot, type PciControllerModel } from '../../../stable/definition/pci-controllers.js';
import type {
  ControllerDefinition,
  DiskDefinition,
  DomainDefinition,
  PciAddress,
} from '../../../stable/definition/schema.js';
import { assignDimms, defaultDriveAddress, diskAlias, nicAlias } from '../../device-aliases.js';
import {
  completeControllers,
  controllerAlias,
  fixedControllerAlias,
  ICH9_FUNCTION,
  isUsbCompanion,
  sortControllers,
} from './controllers.js';
import { type MachineFamily, machineFamily } from './machine.js';
import { type BusKind, busKindOf, parentKinds, slotRange } from './pci-buses.js';
import { checkVirtioModel } from './virtio.js';

/*
 * The device model's define-time step, libvirt's qemuDomainAssignAddresses and
 * qemuAssignDeviceAliases in one: every device gets an alias and, when it is a PCI device, an
 * address; both are stored in the definition, so they never change under a defined domain (start,
 * hotplug and migration use them as they are). Given aliases and addresses are kept. It is
 * idempotent: a definition it returned comes back unchanged.
 */

/** Options of {@link assignDevices}. */
export interface AssignOptions {
  /**
   * For a device being hot-plugged: no controller may be added (a running machine cannot grow a
   * PCIe root port or a SATA controller), so a device that would need one is refused.
   */
  readonly live?: boolean;
}

/** What a QEMU id may look like (QEMU's id_wellformed). */
const QEMU_ID = /^[A-Za-z][A-Za-z0-9._-]*$/;
/** A disk's block node names stay within QEMU's 31 characters whatever its alias (diskNodes). */
const MAX_DISK_ALIAS = 64;

const invalid = (path: string, message: string): VirtError =>
  new VirtError(ErrorCode.XML_ERROR, `invalid domain definition: ${path}: ${message}`, { path });
const unsupported = (path: string, message: string): VirtError =>
  new VirtError(ErrorCode.CONFIG_UNSUPPORTED, `${path}: ${message}`, { path });

/** `0x3` or `0x3.0x1`: a PCI address as QEMU's `addr` property. */
export function pciAddr(address: PciAddress): string {
  const slot = `0x${address.slot.toString(16)}`;
  return address.function === 0 ? slot : `${slot}.0x${address.function.toString(16)}`;
}

const key = (bus: number, slot: number, fn: number): string => `${bus}:${slot}.${fn}`;

const BUS_NAMES: Record<BusKind, string> = {
  root: 'the PCI root',
  port: 'a PCIe port',
  pci: 'a PCI bus',
  'pci-hotplug': 'a PCI bridge',
  ports: 'a PCIe expander bus, for root ports only',
  upstream: 'a switch upstream port, for downstream ports only',
};

type PciController = Extract<ControllerDefinition, { type: 'pci' }>;

/** The PCI slots of a machine and who holds them. */
class PciMap {
  readonly #used = new Map<string, string>();
  /** Bus number → what may sit on it. */
  readonly buses = new Map<number, BusKind>([[0, 'root']]);
  /** Slots of bus 0 that hold root ports only (libvirt aggregates up to eight per slot). */
  readonly #portSlots = new Set<number>();
  readonly #reserved: ReadonlySet<number>;

  constructor(readonly family: MachineFamily) {
    this.#reserved = new Set(family === 'q35' ? [0, 0x1f] : [0, 1]);
  }

  /**
   * Claims a given address, checking it fits the machine and the bus; `model` is the PCI
   * controller that claims it (an endpoint device: undefined).
   */
  claim(address: PciAddress, owner: string, path: string, fixedOk = false, model?: PciControllerModel): void {
    const kind = this.buses.get(address.bus);
    if (kind === undefined) {
      throw unsupported(
        `${path}.bus`,
        this.family === 'q35'
          ? `bus ${address.bus} has no controller (add <controller type='pci' model='pcie-root-port' index='${address.bus}'/>)`
          : `bus ${address.bus} has no controller (add <controller type='pci' model='pci-bridge' index='${address.bus}'/>)`,
      );
    }
    if (!parentKinds(model, this.family).includes(kind))
      throw unsupported(
        `${path}.bus`,
        `${model ? `a ${model}` : 'a device'} on bus ${address.bus} (${BUS_NAMES[kind]})`,
      );
    const range = slotRange(kind);
    if (kind === 'port' && address.slot !== 0)
      throw unsupported(`${path}.slot`, `slot ${address.slot} behind a PCIe root port (only slot 0 exists)`);
    if (kind !== 'root' && address.slot < range.min)
      throw unsupported(
        `${path}.slot`,
        `slot ${address.slot} of bus ${address.bus} (${BUS_NAMES[kind]}: slots ${range.min}-${range.max})`,
      );
    if (kind === 'root' && this.#reserved.has(address.slot) && !fixedOk)
      throw unsupported(
        `${path}.slot`,
        `slot ${address.slot} of bus 0, which the ${this.family} chipset uses`,
      );
    const k = key(address.bus, address.slot, address.function);
    const holder = this.#used.get(k);
    if (holder !== undefined) throw invalid(path, `PCI address ${k} is already taken by ${holder}`);
    this.#used.set(k, owner);
  }

  /** The first free slot of one of the buses given, for a PCI controller of `model`. */
  nextSlotOn(buses: number[], owner: string, path: string, model: PciControllerModel): PciAddress {
    for (const bus of buses) {
      const kind = this.buses.get(bus);
      if (kind === undefined || !parentKinds(model, this.family).includes(kind)) continue;
      const { min, max } = slotRange(kind);
      for (let slot = min; slot <= max; slot++) {
        if (!this.slotFree(bus, slot)) continue;
        const address: PciAddress = { type: 'pci', domain: 0, bus, slot, function: 0 };
        this.#used.set(key(bus, slot, 0), owner);
        return address;
      }
    }
    throw unsupported(`${path}.address`, `a ${model}: no bus with a free slot for it (give it an address)`);
  }

  #slotFree(bus: number, slot: number): boolean {
    for (let fn = 0; fn < 8; fn++) if (this.#used.has(key(bus, slot, fn))) return false;
    return true;
  }

  /** Whether no function of a slot is taken (and bus 0's chipset does not hold it). */
  slotFree(bus: number, slot: number): boolean {
    return !(bus === 0 && this.#reserved.has(slot)) && this.#slotFree(bus, slot);
  }

  /** Gives back one function {@link nextRootSlot} took. */
  release(bus: number, slot: number, fn: number): void {
    this.#used.delete(key(bus, slot, fn));
  }

  /** The first free slot of a conventional PCI bus for an endpoint. */
  nextSlotOnBus(bus: number, owner: string, path: string): PciAddress {
    const { min, max } = slotRange(this.buses.get(bus) ?? 'pci');
    for (let slot = min; slot <= max; slot++) {
      if (!this.#slotFree(bus, slot)) continue;
      const address: PciAddress = { type: 'pci', domain: 0, bus, slot, function: 0 };
      this.#used.set(key(bus, slot, 0), owner);
      return address;
    }
    throw unsupported(path, `a PCI device: every slot of bus ${bus} is taken`);
  }

  /** The first free slot of bus 0 for an endpoint. */
  nextRootSlot(owner: string, path: string): PciAddress {
    for (let slot = 0; slot < 32; slot++) {
      if (this.#reserved.has(slot) || !this.#slotFree(0, slot)) continue;
      const address: PciAddress = { type: 'pci', domain: 0, bus: 0, slot, function: 0 };
      this.#used.set(key(0, slot, 0), owner);
      return address;
    }
    throw unsupported(path, 'a PCI device: every slot of bus 0 is taken');
  }

  /** The next function for a root port: next to the other root ports, or a new slot. */
  nextPortFunction(owner: string, path: string): PciAddress {
    for (let slot = 0; slot < 32; slot++) {
      if (this.#reserved.has(slot)) continue;
      const free = this.#slotFree(0, slot);
      if (!free && !this.#portSlots.has(slot)) continue;
      for (let fn = 0; fn < 8; fn++) {
        if (this.#used.has(key(0, slot, fn))) continue;
        this.#used.set(key(0, slot, fn), owner);
        this.#portSlots.add(slot);
        return {
          type: 'pci',
          domain: 0,
          bus: 0,
          slot,
          function: fn,
          ...(fn === 0 ? { multifunction: true } : {}),
        };
      }
    }
    throw unsupported(path, 'a PCIe root port: every slot of bus 0 is taken');
  }

  markPortSlot(slot: number): void {
    this.#portSlots.add(slot);
  }

  /** Whether slot 0 of a root port's bus is free. */
  portFree(bus: number): boolean {
    return this.#slotFree(bus, 0);
  }

  take(address: PciAddress, owner: string): void {
    this.#used.set(key(address.bus, address.slot, address.function), owner);
  }
}

/** A device that wants a PCI address, and how to give it one. */
interface PciItem {
  readonly path: string;
  readonly owner: string;
  /** PCI Express devices go behind a root port on Q35; conventional PCI ones sit on bus 0. */
  readonly express: boolean;
  /** A member of an ICH9 USB set: all of them share one slot, each at its own function. */
  readonly ich9?: keyof typeof ICH9_FUNCTION;
  /** A conventional PCI device that stays on bus 0 of a q35 machine (a chipset function: ich9-ahci). */
  readonly integrated?: boolean;
  address?: PciAddress;
  readonly set: (address: PciAddress) => void;
}

/**
 * Fills in what a definition leaves for the device model: implicit controllers, every alias, SATA
 * drive addresses, PCI addresses, the balloon a `currentMemory` below `memory` needs.
 *
 * @throws VirtError `CONFIG_UNSUPPORTED` for a topology virtkit cannot build, `XML_ERROR` for a
 *   duplicate alias or address, an alias QEMU cannot take
 */
export function assignDevices(def: DomainDefinition, options: AssignOptions = {}): DomainDefinition {
  const family = machineFamily(def.os.machine);
  const controllers = completeControllers(def, family);
  if (options.live && controllers.length !== def.controllers.length) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      'the device needs a controller the running domain does not have; attach it to the persistent definition and restart',
    );
  }
  const disks = def.disks.map((d) => ({ ...d }));
  const interfaces = def.interfaces.map((n) => ({ ...n }));
  const needsBalloon = def.currentMemoryKiB !== undefined && def.currentMemoryKiB < def.memoryKiB;
  const memballoon = def.memballoon
    ? { ...def.memballoon }
    : needsBalloon
      ? { model: 'virtio' as const }
      : undefined;

  const watchdogs = def.watchdogs?.map((w) => ({ ...w }));

  assignDriveAddresses(disks);
  assignAliases(family, controllers, disks, interfaces, memballoon, watchdogs ?? []);
  assignPciAddresses(family, controllers, disks, interfaces, memballoon, watchdogs ?? [], options);
  return {
    ...def,
    disks,
    interfaces,
    ...(watchdogs ? { watchdogs } : {}),
    controllers: sortControllers(controllers),
    ...(memballoon ? { memballoon } : {}),
    ...(def.memoryDevices ? { memoryDevices: assignDimms(def) } : {}),
    // libvirt's qemuDomainDefAddDefaultAudioBackend: a sound card needs a backend; without one, no
    // host audio.
    ...(def.sounds?.length && !def.audios?.length ? { audios: [{ id: 1, type: 'none' as const }] } : {}),
  };
}

function assignDriveAddresses(disks: DiskDefinition[]): void {
  const units = new Map<number, string>();
  const ideUnits = new Map<string, string>();
  const scsiUnits = new Map<string, string>();
  disks.forEach((disk, i) => {
    const path = `disks.${i}`;
    const bus = disk.target.bus;
    if (bus === 'virtio') {
      if (disk.address && disk.address.type !== 'pci')
        throw invalid(`${path}.address`, 'a virtio disk takes a PCI address');
      return;
    }
    if (bus === 'usb') {
      if (disk.address && disk.address.type !== 'usb')
        throw invalid(`${path}.address`, 'a usb disk takes a USB address');
      if (disk.address && disk.address.bus !== 0)
        throw unsupported(`${path}.address.bus`, 'a USB bus other than 0 (virtkit has one USB controller)');
      if (disk.device === 'cdrom')
        throw unsupported(
          `${path}.device`,
          'a cdrom on the usb bus (QEMU has no USB CD-ROM: use bus sata, ide or scsi)',
        );
      return;
    }
    if (disk.address && disk.address.type !== 'drive')
      throw invalid(`${path}.address`, `a ${bus} disk takes a drive address`);
    const given = disk.address;
    const address = given ?? defaultDriveAddress(disk);
    if (bus === 'fdc') {
      if (address.controller !== 0 || address.bus !== 0 || address.target !== 0 || address.unit > 1)
        throw unsupported(
          `${path}.address`,
          `floppy position ${address.controller}-${address.bus}-${address.target}-${address.unit} (the floppy controller has units 0-1: fda, fdb)`,
        );
      const k = `fdc-${address.unit}`;
      const holder = ideUnits.get(k);
      if (holder !== undefined)
        throw invalid(`${path}.address`, `floppy unit ${address.unit} is taken by ${holder}`);
      ideUnits.set(k, disk.target.dev);
      disk.address = address;
      return;
    }
    if (bus === 'ide') {
      // libvirt's virDomainDiskDefAssignAddress: two units per bus, two buses per controller.
      if (address.controller !== 0 || address.bus > 1 || address.target !== 0 || address.unit > 1) {
        throw unsupported(
          `${path}.address`,
          `ide position ${address.controller}-${address.bus}-${address.target}-${address.unit} (the PIIX3 has buses 0-1 with units 0-1: name the disk hda…hdd)`,
        );
      }
      const k = `${address.bus}-${address.unit}`;
      const holder = ideUnits.get(k);
      if (holder !== undefined) throw invalid(`${path}.address`, `ide position ${k} is taken by ${holder}`);
      ideUnits.set(k, disk.target.dev);
      disk.address = address;
      return;
    }
    if (bus === 'scsi') {
      if (address.controller !== 0 || address.bus !== 0) {
        throw unsupported(
          `${path}.address`,
          `scsi position ${address.controller}-${address.bus}-${address.target}-${address.unit} (virtkit has one SCSI controller with one bus: name the disk sda…sdg)`,
        );
      }
      const k = `${address.target}-${address.unit}`;
      const holder = scsiUnits.get(k);
      if (holder !== undefined) throw invalid(`${path}.address`, `scsi position ${k} is taken by ${holder}`);
      scsiUnits.set(k, disk.target.dev);
      disk.address = address;
      return;
    }
    if (address.bus !== 0 || address.target !== 0 || address.unit > 5) {
      throw unsupported(
        `${path}.address`,
        `sata port ${address.controller}-${address.bus}-${address.target}-${address.unit} (an AHCI controller has one bus with six ports, units 0-5)`,
      );
    }
    const key = address.controller * 6 + address.unit;
    const holder = units.get(key);
    if (holder !== undefined)
      throw invalid(
        `${path}.address`,
        `sata controller ${address.controller} unit ${address.unit} is taken by ${holder}`,
      );
    units.set(key, disk.target.dev);
    disk.address = address;
  });
}

type Balloon = NonNullable<DomainDefinition['memballoon']>;
type Watchdog = NonNullable<DomainDefinition['watchdogs']>[number];

function assignAliases(
  family: MachineFamily,
  controllers: ControllerDefinition[],
  disks: DiskDefinition[],
  interfaces: Array<DomainDefinition['interfaces'][number]>,
  balloon: Balloon | undefined,
  watchdogs: Watchdog[],
): void {
  const owners = new Map<string, string>();
  const claim = (alias: string, path: string, max = 64): void => {
    if (!QEMU_ID.test(alias) || alias.length > max) {
      throw invalid(
        `${path}.alias`,
        `'${alias.slice(0, 40)}' is not a usable device alias (a letter, then letters, digits, '.', '_' or '-'; at most ${max} characters; libvirt's user aliases start with 'ua-')`,
      );
    }
    const holder = owners.get(alias);
    if (holder !== undefined) throw invalid(`${path}.alias`, `the alias '${alias}' is also ${holder}'s`);
    owners.set(alias, path);
  };
  controllers.forEach((c, i) => {
    const path = `controllers.${i}`;
    const want = fixedControllerAlias(c, family);
    if (want !== undefined && c.alias !== undefined && c.alias !== want)
      throw unsupported(`${path}.alias`, `the alias '${c.alias}' for a controller QEMU names '${want}'`);
    if (want !== undefined) c.alias = want;
  });
  // Given aliases first, so generated ones never take a name the user chose.
  for (const [list, field, max] of [
    [disks, 'disks', MAX_DISK_ALIAS],
    [interfaces, 'interfaces', 64],
    [controllers, 'controllers', 64],
  ] as const) {
    list.forEach((d: { alias?: string }, i: number) => {
      if (d.alias !== undefined && !(field === 'controllers' && isUsbCompanion(d as ControllerDefinition)))
        claim(d.alias, `${field}.${i}`, max);
    });
  }
  if (balloon?.alias !== undefined) claim(balloon.alias, 'memballoon');
  watchdogs.forEach((w, i) => {
    if (w.alias !== undefined) claim(w.alias, `watchdogs.${i}`);
  });

  controllers.forEach((c, i) => {
    if (c.alias !== undefined || isUsbCompanion(c)) return;
    c.alias = controllerAlias(c, family);
    claim(c.alias, `controllers.${i}`);
  });
  // ICH9 UHCI companions are part of their EHCI master and carry its alias, as in libvirt.
  const master = controllers.find((c) => c.type === 'usb' && c.model === 'ich9-ehci1');
  controllers.forEach((c, i) => {
    if (!isUsbCompanion(c)) return;
    if (c.alias !== undefined && c.alias !== master?.alias)
      throw invalid(
        `controllers.${i}.alias`,
        `a USB companion carries its master's alias '${master?.alias}'`,
      );
    c.alias = master?.alias;
  });
  disks.forEach((disk, i) => {
    if (disk.alias !== undefined) return;
    disk.alias = diskAlias(disk);
    claim(disk.alias, `disks.${i}`, MAX_DISK_ALIAS);
  });
  interfaces.forEach((nic, i) => {
    if (nic.alias !== undefined) return;
    nic.alias = nicAlias(owners);
    claim(nic.alias, `interfaces.${i}`);
  });
  if (balloon && balloon.alias === undefined) {
    balloon.alias = 'balloon0';
    claim(balloon.alias, 'memballoon');
  }
  watchdogs.forEach((w, i) => {
    if (w.alias !== undefined) return;
    w.alias = `watchdog${i}`;
    claim(w.alias, `watchdogs.${i}`);
  });
}

function assignPciAddresses(
  family: MachineFamily,
  controllers: ControllerDefinition[],
  disks: DiskDefinition[],
  interfaces: Array<DomainDefinition['interfaces'][number]>,
  balloon: Balloon | undefined,
  watchdogs: Watchdog[],
  options: AssignOptions,
): void {
  const pci = new PciMap(family);
  const ports = controllers.filter(
    (c): c is Extract<ControllerDefinition, { type: 'pci' }> =>
      c.type === 'pci' && c.model === 'pcie-root-port',
  );
  // Bridges, expander buses and switch ports: each makes a bus of its own kind.
  const bridges = controllers.filter(
    (c): c is PciController => c.type === 'pci' && !isPciRoot(c.model) && c.model !== 'pcie-root-port',
  );
  for (const port of ports) pci.buses.set(port.index ?? 0, 'port');
  for (const b of bridges) pci.buses.set(b.index ?? 0, busKindOf(b.model));
  const ctlPath = (c: ControllerDefinition) => `controllers.${controllers.indexOf(c)}`;
  // A root port the definition lacks, added as libvirt adds one: alias named for its index.
  const addRootPort = (index: number): void => {
    const port: PciController = { type: 'pci', index, model: 'pcie-root-port', alias: `pci.${index}` };
    controllers.push(port);
    ports.push(port);
    pci.buses.set(index, 'port');
  };
  // libvirt's rule, and QEMU's need: a controller sits on a bus made before it, of lower index.
  for (const c of [...ports, ...bridges]) {
    if (c.address && c.address.bus >= (c.index ?? 0))
      throw invalid(
        `${ctlPath(c)}.address.bus`,
        `a ${c.model} with index ${c.index} sits on a bus of lower index, not ${c.address.bus}`,
      );
  }

  // Addresses QEMU fixes for built-in functions.
  for (const c of controllers) {
    let fixed: PciAddress | undefined;
    if (c.type === 'sata' && family === 'q35' && (c.index ?? 0) === 0)
      fixed = { type: 'pci', domain: 0, bus: 0, slot: 0x1f, function: 2 };
    if (c.type === 'usb' && c.model === 'piix3-uhci')
      fixed = { type: 'pci', domain: 0, bus: 0, slot: 1, function: 2 };
    if (c.type === 'ide') fixed = { type: 'pci', domain: 0, bus: 0, slot: 1, function: 1 };
    if (!fixed) continue;
    if (
      c.address &&
      (c.address.bus !== 0 || c.address.slot !== fixed.slot || c.address.function !== fixed.function)
    ) {
      throw unsupported(
        `${ctlPath(c)}.address`,
        `an address other than ${pciAddr(fixed)} on bus 0 for the ${c.type} controller built into the chipset`,
      );
    }
    c.address = c.address ?? fixed;
    pci.claim(c.address, c.alias ?? c.type, `${ctlPath(c)}.address`, true);
  }

  const items: PciItem[] = [];
  const addItem = (
    path: string,
    owner: string,
    express: boolean,
    holder: { address?: PciAddress | DiskDefinition['address'] },
    ich9?: keyof typeof ICH9_FUNCTION,
    integrated = false,
  ) => {
    const address = holder.address?.type === 'pci' ? holder.address : undefined;
    items.push({
      path,
      owner,
      express,
      ...(ich9 ? { ich9 } : {}),
      ...(integrated ? { integrated } : {}),
      ...(address ? { address } : {}),
      set: (a) => {
        holder.address = a;
      },
    });
  };
  // libvirt's order: interfaces, controllers, disks, the balloon.
  interfaces.forEach((nic, i) => {
    checkVirtioModel(nic.model, family, `interfaces.${i}.model`);
    // libvirt's PCI Express devices: virtio (not transitional) and e1000e; e1000 and rtl8139 are PCI.
    const express =
      nic.model === 'virtio' || nic.model === 'virtio-non-transitional' || nic.model === 'e1000e';
    addItem(`interfaces.${i}`, nic.alias ?? '', express, nic);
  });
  for (const c of controllers) {
    const endpoint =
      // Q35's first AHCI is built in; further ones are ich9-ahci devices, on the root bus as libvirt
      // puts devices that are never hot-plugged.
      (c.type === 'sata' && (family !== 'q35' || (c.index ?? 0) > 0)) ||
      c.type === 'scsi' ||
      (c.type === 'usb' && c.model === 'qemu-xhci') ||
      c.type === 'virtio-serial';
    if (c.type === 'usb' && c.model !== undefined && c.model in ICH9_FUNCTION)
      addItem(ctlPath(c), `${c.alias ?? ''} (${c.model})`, false, c, c.model as keyof typeof ICH9_FUNCTION);
    // The LSI 53C895A is a conventional PCI card; virtio-scsi (not transitional) is PCI Express.
    else if (endpoint)
      addItem(
        ctlPath(c),
        c.alias ?? '',
        c.type !== 'sata' &&
          !(c.type === 'scsi' && (c.model === 'lsilogic' || c.model === 'virtio-transitional')),
        c,
        undefined,
        c.type === 'sata',
      );
    // "No USB" has no device: libvirt 9.0 drops the address KubeVirt writes on it (the slot stays free).
    else if (c.type === 'usb' && c.model === 'none' && c.address) delete c.address;
  }
  disks.forEach((disk, i) => {
    if (disk.target.bus !== 'virtio') return;
    checkVirtioModel(disk.model, family, `disks.${i}.model`);
    addItem(`disks.${i}`, disk.alias ?? '', disk.model !== 'virtio-transitional', disk);
  });
  if (balloon) {
    checkVirtioModel(balloon.model, family, 'memballoon.model');
    addItem('memballoon', balloon.alias ?? '', balloon.model !== 'virtio-transitional', balloon);
  }
  // The i6300esb is a conventional PCI card; the ib700 is ISA and has no PCI address.
  watchdogs.forEach((w, i) => {
    if (w.model === 'i6300esb') addItem(`watchdogs.${i}`, w.alias ?? '', false, w);
    else if (w.address)
      throw invalid(`watchdogs.${i}.address`, 'an ib700 is an ISA card: it has no PCI address');
  });

  // Conventional PCI devices of a q35 machine go on a PCI bridge's bus, as libvirt puts them (pcie.0
  // takes no hot-plug, a bridge does); when there is none, libvirt adds a pcie-to-pci-bridge with a
  // root port of its own.
  const conventional = (item: PciItem) =>
    family === 'q35' && !item.express && !item.ich9 && !item.integrated && !item.address;
  let pciBus = [...bridges]
    .sort((a, b) => (a.index ?? 0) - (b.index ?? 0))
    .find((b) => busKindOf(b.model) === 'pci-hotplug' || busKindOf(b.model) === 'pci');
  if (!pciBus && items.some(conventional)) {
    if (options.live) {
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        "the device is conventional PCI, which a q35 domain hot-plugs into a pcie-to-pci-bridge it does not have; define it with <controller type='pci' model='pcie-to-pci-bridge'/>",
      );
    }
    const free = (from: number): number => {
      let n = from;
      while (pci.buses.has(n) || controllers.some((c) => c.type === 'pci' && c.index === n)) n++;
      return n;
    };
    const portIndex = free(
      Math.max(0, ...ports.map((p) => p.index ?? 0), ...bridges.map((b) => b.index ?? 0)) + 1,
    );
    addRootPort(portIndex);
    const bridgeIndex = free(portIndex + 1);
    pciBus = { type: 'pci', index: bridgeIndex, model: 'pcie-to-pci-bridge', alias: `pci.${bridgeIndex}` };
    controllers.push(pciBus);
    bridges.push(pciBus);
    pci.buses.set(bridgeIndex, 'pci-hotplug');
  }

  // Root ports and bridges with an address first, then every device with one.
  for (const port of ports) {
    if (!port.address) continue;
    pci.claim(port.address, port.alias ?? '', `${ctlPath(port)}.address`, false, port.model);
    if (port.address.bus === 0) pci.markPortSlot(port.address.slot);
  }
  for (const b of bridges) {
    if (b.address) pci.claim(b.address, b.alias ?? '', `${ctlPath(b)}.address`, false, b.model);
  }
  for (const item of items) if (item.address) pci.claim(item.address, item.owner, `${item.path}.address`);

  // An upstream port and a pcie-to-pci-bridge without an address take a root port, before devices.
  const behindPort = bridges
    .filter(
      (b) => !b.address && (b.model === 'pcie-switch-upstream-port' || b.model === 'pcie-to-pci-bridge'),
    )
    .map(
      (b): PciItem => ({
        path: ctlPath(b),
        owner: b.alias ?? '',
        express: true,
        set: (a) => {
          b.address = a;
        },
      }),
    );
  const waiting = [...behindPort, ...items.filter((item) => !item.address)];
  const behindPorts = family === 'q35' ? waiting.filter((item) => item.express) : [];
  const freePorts = ports.filter((p) => pci.portFree(p.index ?? 0)).map((p) => p.index ?? 0);
  const missing = behindPorts.length - freePorts.length;
  if (missing > 0 && options.live) {
    throw new VirtError(
      ErrorCode.OPERATION_INVALID,
      "no free PCIe root port for the device: a q35 domain hot-plugs into spare ports; define it with more <controller type='pci' model='pcie-root-port'/>",
    );
  }
  let next = Math.max(0, ...ports.map((p) => p.index ?? 0)) + 1;
  for (let i = 0; i < missing; i++) {
    while (pci.buses.has(next)) next++;
    addRootPort(next);
    freePorts.push(next);
  }
  for (const port of ports) {
    if (!port.address) port.address = pci.nextPortFunction(port.alias ?? '', ctlPath(port));
    const index = port.index ?? 0;
    port.target = {
      ...port.target,
      chassis: port.target?.chassis ?? index,
      port: port.target?.port ?? (port.address.slot << 3) | port.address.function,
    };
  }
  freePorts.sort((a, b) => a - b);
  // Those a root port takes are placed with the devices, first.
  const onPorts = new Set(family === 'q35' ? behindPort.map((item) => item.path) : []);
  placeBridges(
    pci,
    family,
    bridges.filter((b) => !onPorts.has(ctlPath(b))),
    ctlPath,
  );
  const ich9 = items.filter((item) => item.ich9);
  for (const item of waiting) {
    if (item.ich9) {
      if (item.address) continue;
      placeIch9Set(pci, family, ich9);
    } else if (family === 'q35' && item.express) {
      const bus = freePorts.shift() as number;
      const address: PciAddress = { type: 'pci', domain: 0, bus, slot: 0, function: 0 };
      pci.take(address, item.owner);
      item.set(address);
    } else if (pciBus && family === 'q35' && !item.integrated) {
      item.set(pci.nextSlotOnBus(pciBus.index ?? 0, item.owner, item.path));
    } else {
      item.set(pci.nextRootSlot(item.owner, item.path));
    }
  }
}

/**
 * Addresses, in index order, for the bridges, expander buses and downstream ports the definition
 * leaves without one (libvirt's choices: the DMI-to-PCI bridge at 00:1e.0, the others on the first
 * bus of lower index that takes them), then their default target numbers.
 */
function placeBridges(
  pci: PciMap,
  family: MachineFamily,
  bridges: PciController[],
  ctlPath: (c: ControllerDefinition) => string,
): void {
  const ordered = [...bridges].sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
  for (const b of ordered) {
    if (b.address) continue;
    const index = b.index ?? 0;
    if (b.model === 'dmi-to-pci-bridge' && family === 'q35' && pci.slotFree(0, 0x1e)) {
      b.address = { type: 'pci', domain: 0, bus: 0, slot: 0x1e, function: 0 };
      pci.take(b.address, b.alias ?? '');
      continue;
    }
    const buses = [...pci.buses.keys()].filter((bus) => bus < index).sort((x, y) => x - y);
    b.address = pci.nextSlotOn(buses, b.alias ?? '', ctlPath(b), b.model);
  }
  // libvirt's expander bus numbers: each below the lowest so far, leaving one for a bus behind it.
  let lowest = Math.min(256, ...ordered.map((b) => b.target?.busNr ?? 256));
  for (const b of ordered) {
    const index = b.index ?? 0;
    if (b.model === 'pci-bridge') b.target = { ...b.target, chassisNr: b.target?.chassisNr ?? index };
    if (
      (b.model === 'pci-expander-bus' || b.model === 'pcie-expander-bus') &&
      b.target?.busNr === undefined
    ) {
      lowest -= 2;
      b.target = { ...b.target, busNr: lowest };
    }
    if (b.model === 'pcie-switch-downstream-port' && b.address) {
      b.target = {
        ...b.target,
        chassis: b.target?.chassis ?? index,
        port: b.target?.port ?? (b.address.slot << 3) | b.address.function,
      };
    }
  }
}

/**
 * The members of an ICH9 USB set without an address join the slot of those with one, or take a
 * slot of bus 0 of their own (00:1d on Q35, where the ICH9 has them, when it is free), the EHCI at
 * function 7 and the UHCI companions at 0-2, the first of them marked multifunction.
 */
function placeIch9Set(pci: PciMap, family: MachineFamily, set: PciItem[]): void {
  const placed = set.find((item) => item.address);
  let slot = placed?.address?.slot;
  if (slot === undefined) {
    slot = family === 'q35' && pci.slotFree(0, 0x1d) ? 0x1d : pci.nextRootSlot('', set[0]?.path ?? '').slot;
    pci.release(0, slot, 0);
  }
  const bus = placed?.address?.bus ?? 0;
  for (const item of set) {
    if (item.address || !item.ich9) continue;
    const fn = ICH9_FUNCTION[item.ich9];
    const address: PciAddress = {
      type: 'pci',
      domain: 0,
      bus,
      slot,
      function: fn,
      ...(fn === 0 && set.length > 1 ? { multifunction: true } : {}),
    };
    pci.claim(address, item.owner, `${item.path}.address`);
    item.address = address;
    item.set(address);
  }
}

import {
  isPciRoot,
  PCI_CONTROLLER_DEVICE,
  PCI_CONTROLLER_MODELS,
  type PciControllerModel,
} from './pci-controllers.js';
import { sizeToKiB } from './xml-parse-memory.js';
import { boolAttr } from './xml-parse-platform.js';
import {
  check,
  child,
  choice,
  intAttr,
  invalid,
  type Obj,
  type Origins,
  parseUint,
  set,
  textOf,
  unsupported,
} from './xml-parse-rules.js';
import { parseVirtioDriver, VIRTIO_DRIVER_ATTRS } from './xml-parse-virtio.js';
import type { XmlElement } from './xml-tree.js';

/*
 * Device addresses, controllers and the memory balloon of the domain XML: `<address type='pci'>`,
 * `<address type='drive'>`, `<controller>` and `<memballoon model='virtio'>`. Numbers are read as
 * libvirt writes them, hexadecimal with `0x` (`slot='0x03'`) or decimal.
 */

/** A libvirt number attribute: `0x1f` or `31`. */
function numAttr(el: XmlElement, name: string): number | undefined {
  const value = el.attrs.get(name);
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^0x[0-9a-f]+$/i.test(v)) return Number.parseInt(v.slice(2), 16);
  return intAttr(el, name);
}

/** `<address>` of a device, into `out.address`; `types` are the address types the device takes. */
export function parseAddress(
  origins: Origins,
  parent: XmlElement,
  field: string,
  out: Obj,
  types: ReadonlyArray<'pci' | 'drive' | 'usb'>,
): void {
  const el = child(parent, 'address');
  if (!el) return;
  origins.note(`${field}.address`, el);
  const type = el.attrs.get('type');
  if (type === undefined) throw invalid(el, `<address> needs a type`, 'type');
  const kind = choice(
    el,
    type,
    'the address type',
    types,
    [
      'pci',
      'drive',
      'virtio-serial',
      'ccid',
      'usb',
      'spapr-vio',
      'ccw',
      'virtio-mmio',
      'isa',
      'dimm',
      'unassigned',
    ],
    'type',
  );
  const address: Obj = { type: kind };
  if (kind === 'pci') {
    check(el, { attrs: ['type', 'domain', 'bus', 'slot', 'function', 'multifunction'] });
    for (const name of ['domain', 'bus', 'slot', 'function'] as const) {
      origins.note(`${field}.address.${name}`, el, name);
      set(address, name, numAttr(el, name));
    }
    const multi = el.attrs.get('multifunction');
    if (multi !== undefined) {
      origins.note(`${field}.address.multifunction`, el, 'multifunction');
      address.multifunction = choice(el, multi, 'multifunction', ['on', 'off'], [], 'multifunction') === 'on';
    }
  } else if (kind === 'usb') {
    check(el, { attrs: ['type', 'bus', 'port'] });
    origins.note(`${field}.address.bus`, el, 'bus');
    set(address, 'bus', numAttr(el, 'bus'));
    origins.note(`${field}.address.port`, el, 'port');
    const port = el.attrs.get('port');
    if (port === undefined) throw invalid(el, "<address type='usb'> needs a port", 'port');
    address.port = port;
  } else {
    check(el, { attrs: ['type', 'controller', 'bus', 'target', 'unit'] });
    for (const name of ['controller', 'bus', 'target', 'unit'] as const) {
      origins.note(`${field}.address.${name}`, el, name);
      set(address, name, numAttr(el, name));
    }
  }
  out.address = address;
}

/** `<alias name>` of a device, into `out.alias`. */
export function parseDeviceAlias(origins: Origins, parent: XmlElement, field: string, out: Obj): void {
  const el = child(parent, 'alias');
  if (!el) return;
  check(el, { attrs: ['name'] });
  origins.note(`${field}.alias`, el, 'name');
  const name = el.attrs.get('name');
  if (name === undefined) throw invalid(el, '<alias> needs a name', 'name');
  out.alias = name;
}

/** `<controller>`: pci (root, PCIe root port), sata, usb (with ICH9 companions), scsi, virtio-serial, ide, fdc. */
export function parseController(origins: Origins, el: XmlElement, i: number): Obj {
  const field = `controllers.${i}`;
  origins.note(field, el);
  const type = el.attrs.get('type');
  if (type === undefined) throw invalid(el, '<controller> needs a type', 'type');
  const kind = choice(
    el,
    type,
    'the controller type',
    ['pci', 'sata', 'usb', 'virtio-serial', 'ide', 'scsi', 'fdc'],
    ['xenbus', 'ccid', 'isa'],
    'type',
  );
  const out: Obj = { type: kind };
  const index = el.attrs.get('index');
  if (index !== undefined) {
    origins.note(`${field}.index`, el, 'index');
    out.index = numAttr(el, 'index');
  }
  const model = el.attrs.get('model');
  if (kind === 'pci') {
    check(el, {
      attrs: ['type', 'index', 'model'],
      children: ['model', 'target', 'alias', 'address', 'pcihole64'],
    });
    if (model === undefined) throw invalid(el, "<controller type='pci'> needs a model", 'model');
    origins.note(`${field}.model`, el, 'model');
    out.model = choice(el, model, 'the PCI controller model', PCI_CONTROLLER_MODELS, [], 'model');
    const modelName = child(el, 'model');
    if (modelName) {
      check(modelName, { attrs: ['name'] });
      const device = modelName.attrs.get('name');
      const own = isPciRoot(out.model as PciControllerModel)
        ? undefined
        : PCI_CONTROLLER_DEVICE[out.model as keyof typeof PCI_CONTROLLER_DEVICE];
      if (device === 'ioh3420' && out.model === 'pcie-root-port') {
        origins.note(`${field}.modelName`, modelName, 'name');
        out.modelName = device;
      } else if (device !== undefined && device !== own) {
        throw unsupported(
          modelName,
          `the controller device '${device}' for a ${String(out.model)} (virtkit uses '${own ?? 'none'}')`,
          'name',
        );
      }
    }
    const target = child(el, 'target');
    if (target) {
      check(target, { attrs: ['chassis', 'port', 'chassisNr', 'busNr', 'hotplug'], children: ['node'] });
      origins.note(`${field}.target`, target);
      const t: Obj = {};
      origins.note(`${field}.target.hotplug`, target, 'hotplug');
      set(t, 'hotplug', boolAttr(target, 'hotplug'));
      for (const attr of ['chassis', 'port', 'chassisNr', 'busNr']) {
        origins.note(`${field}.target.${attr}`, target, attr);
        set(t, attr, numAttr(target, attr));
      }
      const node = child(target, 'node');
      if (node) {
        origins.note(`${field}.target.node`, node);
        t.node = parseUint(node, textOf(origins, node, `${field}.target.node`), 'the NUMA node');
      }
      out.target = t;
    }
    const hole = child(el, 'pcihole64');
    if (hole) {
      check(hole, { attrs: ['unit'], text: true });
      origins.note(`${field}.pcihole64KiB`, hole);
      out.pcihole64KiB = sizeToKiB(hole, hole.text, hole.attrs.get('unit') ?? 'KiB');
    }
  } else if (kind === 'fdc') {
    check(el, { attrs: ['type', 'index'], children: ['alias'] });
  } else if (kind === 'virtio-serial') {
    check(el, {
      attrs: ['type', 'index', 'model', 'ports', 'vectors'],
      children: ['driver', 'alias', 'address'],
    });
    const driver = child(el, 'driver');
    if (driver) {
      check(driver, { attrs: VIRTIO_DRIVER_ATTRS });
      parseVirtioDriver(origins, driver, field, out, true);
    }
    if (model !== undefined) {
      origins.note(`${field}.model`, el, 'model');
      out.model = choice(
        el,
        model,
        'the virtio-serial controller model',
        ['virtio', 'virtio-transitional', 'virtio-non-transitional'],
        [],
        'model',
      );
    }
    for (const name of ['ports', 'vectors'] as const) {
      origins.note(`${field}.${name}`, el, name);
      set(out, name, numAttr(el, name));
    }
  } else if (kind === 'usb') {
    check(el, { attrs: ['type', 'index', 'model', 'ports'], children: ['master', 'alias', 'address'] });
    origins.note(`${field}.ports`, el, 'ports');
    set(out, 'ports', numAttr(el, 'ports'));
    if (model !== undefined) {
      origins.note(`${field}.model`, el, 'model');
      out.model = choice(
        el,
        model,
        'the USB controller model',
        ['none', 'piix3-uhci', 'qemu-xhci', 'ich9-ehci1', 'ich9-uhci1', 'ich9-uhci2', 'ich9-uhci3'],
        'any',
        'model',
      );
    }
    const master = child(el, 'master');
    if (master) {
      check(master, { attrs: ['startport'] });
      origins.note(`${field}.master`, master, 'startport');
      const startport = numAttr(master, 'startport');
      if (startport === undefined) throw invalid(master, '<master> needs a startport', 'startport');
      out.master = { startport };
    }
  } else if (kind === 'scsi') {
    check(el, { attrs: ['type', 'index', 'model'], children: ['driver', 'alias', 'address'] });
    if (model !== undefined) {
      origins.note(`${field}.model`, el, 'model');
      out.model = choice(
        el,
        model,
        'the SCSI controller model',
        ['virtio-scsi', 'virtio-transitional', 'virtio-non-transitional', 'lsilogic'],
        [
          'auto',
          'buslogic',
          'lsisas1068',
          'lsisas1078',
          'vmpvscsi',
          'ibmvscsi',
          'ncr53c90',
          'am53c974',
          'dc390',
        ],
        'model',
      );
    }
    const driver = child(el, 'driver');
    if (driver) parseScsiDriver(origins, driver, field, out);
  } else {
    check(el, { attrs: ['type', 'index'], children: ['alias', 'address'] });
  }
  parseDeviceAlias(origins, el, field, out);
  parseAddress(origins, el, field, out, ['pci']);
  return out;
}

/** `<memballoon>`: `model='none'` is no balloon; `model='virtio'` a balloon with its alias and address. */
/** A SCSI controller's `<driver queues iothread cmd_per_lun max_sectors ioeventfd>`: virtio-scsi only. */
function parseScsiDriver(origins: Origins, driver: XmlElement, field: string, out: Obj): void {
  check(driver, {
    attrs: ['queues', 'iothread', 'cmd_per_lun', 'max_sectors', 'ioeventfd', ...VIRTIO_DRIVER_ATTRS],
  });
  const virtio = out.model !== undefined && out.model !== 'lsilogic';
  const d: Obj = {};
  for (const [attr, key] of [
    ['queues', 'queues'],
    ['iothread', 'iothread'],
    ['cmd_per_lun', 'cmdPerLun'],
    ['max_sectors', 'maxSectors'],
  ] as const) {
    origins.note(`${field}.driver.${key}`, driver, attr);
    set(d, key, intAttr(driver, attr));
  }
  set(d, 'ioeventfd', boolAttr(driver, 'ioeventfd'));
  if (Object.keys(d).length > 0) {
    if (!virtio) throw invalid(driver, "a SCSI controller's <driver> options need model='virtio-scsi'");
    out.driver = d;
  }
  parseVirtioDriver(origins, driver, field, out, virtio);
}

export function parseMemballoon(origins: Origins, el: XmlElement, out: Obj): void {
  check(el, { attrs: ['model', 'freePageReporting'], children: ['stats', 'driver', 'alias', 'address'] });
  const model = el.attrs.get('model');
  if (model === undefined) throw invalid(el, "<memballoon> needs a model, 'virtio' or 'none'", 'model');
  const kind = choice(
    el,
    model,
    'the memory balloon model',
    ['virtio', 'virtio-transitional', 'virtio-non-transitional', 'none'],
    ['xen'],
    'model',
  );
  if (kind === 'none') {
    if (
      child(el, 'address') ||
      child(el, 'alias') ||
      child(el, 'stats') ||
      child(el, 'driver') ||
      el.attrs.has('freePageReporting')
    )
      throw invalid(el, "<memballoon model='none'> takes no address, alias, stats or freePageReporting");
    return;
  }
  origins.note('memballoon', el);
  const balloon: Obj = { model: kind };
  const reporting = el.attrs.get('freePageReporting');
  if (reporting !== undefined) {
    origins.note('memballoon.freePageReporting', el, 'freePageReporting');
    balloon.freePageReporting =
      choice(el, reporting, 'freePageReporting', ['on', 'off'], [], 'freePageReporting') === 'on';
  }
  const stats = child(el, 'stats');
  if (stats) {
    check(stats, { attrs: ['period'] });
    origins.note('memballoon.statsPeriod', stats, 'period');
    set(balloon, 'statsPeriod', intAttr(stats, 'period'));
  }
  const driver = child(el, 'driver');
  if (driver) {
    check(driver, { attrs: VIRTIO_DRIVER_ATTRS });
    parseVirtioDriver(origins, driver, 'memballoon', balloon, true);
  }
  parseDeviceAlias(origins, el, 'memballoon', balloon);
  parseAddress(origins, el, 'memballoon', balloon, ['pci']);
  out.memballoon = balloon;
}

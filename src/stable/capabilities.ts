/*
 * The shapes of `conn.getCapabilities()` and `conn.getDomainCapabilities()`: libvirt's XML plus a
 * typed object of the same facts.
 */

/**
 * A page size and how many pages of it a NUMA cell has.
 *
 * @public
 */
export interface HostPages {
  /** The page size in KiB (4, 2048, 1048576). */
  readonly sizeKiB: number;
  /** Pages of that size in the cell (for huge pages: those reserved). */
  readonly count: number;
}

/**
 * One NUMA cell of the host.
 *
 * @public
 */
export interface HostCpuCell {
  /** The NUMA node id. */
  readonly id: number;
  /** Memory of the node in KiB. */
  readonly memoryKiB: number;
  /** Pages per size. */
  readonly pages: readonly HostPages[];
  /** Distances to every node, itself included (10 is local). */
  readonly distances: ReadonlyArray<{ readonly id: number; readonly value: number }>;
  /** The node's online CPUs with their place in the topology. */
  readonly cpus: ReadonlyArray<{
    readonly id: number;
    readonly socketId: number;
    readonly dieId: number;
    readonly coreId: number;
    /** The CPU's thread siblings as a cpuset (`0,2`). */
    readonly siblings: string;
  }>;
}

/**
 * The host part of the capabilities.
 *
 * @public
 */
export interface HostCapabilities {
  /** The host CPU. */
  readonly cpu: {
    /** The architecture, e.g. `x86_64`. */
    readonly arch: string;
    /**
     * libvirt's name of the CPU model. virtkit leaves it out: libvirt matches features against its
     * own CPU map to name it.
     */
    readonly model?: string;
    /** The vendor (`Intel`, `AMD`…). */
    readonly vendor?: string;
    /** CPUID family, model and stepping. */
    readonly signature?: { readonly family: number; readonly model: number; readonly stepping: number };
    /** Sockets, dies per socket, cores per die, threads per core. */
    readonly topology: {
      readonly sockets: number;
      readonly dies: number;
      readonly cores: number;
      readonly threads: number;
    };
    /**
     * Every feature of the host CPU the kernel reports (/proc/cpuinfo), in libvirt's names, sorted.
     * libvirt, reading CPUID itself, may also name features the kernel disabled.
     */
    readonly features: readonly string[];
    /** Page sizes the host supports, in KiB. */
    readonly pageSizesKiB: readonly number[];
  };
  /** NUMA cells (one when the host has no NUMA). */
  readonly cells: readonly HostCpuCell[];
  /** The security model applied to QEMU processes: virtkit applies no labels. */
  readonly secmodel: 'none';
}

/**
 * A machine type of a guest architecture.
 *
 * @public
 */
export interface GuestMachine {
  /** The machine type as a definition may name it (`pc-i440fx-7.2`, or the alias `pc`). */
  readonly name: string;
  /** For an alias: the versioned machine it stands for. */
  readonly canonical?: string;
  /** The most vCPUs the machine type takes. */
  readonly maxCpus: number;
}

/**
 * A guest architecture an emulator provides.
 *
 * @public
 */
export interface GuestCapabilities {
  /** Always `hvm`. */
  readonly osType: 'hvm';
  /** The guest architecture, e.g. `x86_64`. */
  readonly arch: string;
  /** Bits of the architecture's word. */
  readonly wordsize: number;
  /** The emulator binary. */
  readonly emulator: string;
  /** The emulator's machine types, versioned ones and aliases. */
  readonly machines: readonly GuestMachine[];
  /** Domain types usable with this emulator on this host: `qemu` (TCG), and `kvm` when KVM works. */
  readonly domainTypes: ReadonlyArray<'qemu' | 'kvm'>;
}

/**
 * What `conn.getCapabilities()` returns: libvirt's capabilities XML and the same facts typed.
 *
 * @public
 */
export interface Capabilities {
  /** libvirt's `<capabilities>` document (`virsh capabilities`). */
  readonly xml: string;
  /** The host. */
  readonly host: HostCapabilities;
  /** The guest architectures of the emulators virtkit uses. */
  readonly guests: readonly GuestCapabilities[];
}

/**
 * Options of `conn.getDomainCapabilities()`: which emulator, architecture, machine type and domain
 * type the answer is for.
 *
 * @public
 */
export interface DomainCapabilitiesOptions {
  /** The emulator binary; default the one a definition without `<emulator>` uses. */
  readonly emulator?: string;
  /** The guest architecture; default the emulator's. */
  readonly arch?: string;
  /** The machine type (alias or versioned); default the emulator's default machine. */
  readonly machine?: string;
  /** The domain type; default `kvm` when KVM works, else `qemu`. */
  readonly virttype?: 'qemu' | 'kvm';
}

/**
 * What `conn.getDomainCapabilities()` returns: libvirt's domcapabilities XML, and the values it
 * names, for what virtkit supports with that emulator.
 *
 * @public
 */
export interface DomainCapabilities {
  /** libvirt's `<domainCapabilities>` document (`virsh domcapabilities`). */
  readonly xml: string;
  /** The emulator binary. */
  readonly emulator: string;
  /** The domain type. */
  readonly domainType: 'qemu' | 'kvm';
  /** The versioned machine type. */
  readonly machine: string;
  /** The guest architecture. */
  readonly arch: string;
  /** The most vCPUs a definition may ask for on this machine type. */
  readonly maxVcpus: number;
  /** Values a definition may use, by libvirt's enum name (`diskDevice`, `bus`, `cpuMode`…). */
  readonly enums: Readonly<Record<string, readonly string[]>>;
  /** CPU models of the emulator (for `<cpu mode='custom'>`). */
  readonly cpuModels: readonly string[];
}

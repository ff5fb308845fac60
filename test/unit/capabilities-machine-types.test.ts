import { describe, expect, it } from 'vitest';
import { canonicalMachineType } from '../../src/drivers/qemu/capabilities/machine-types.js';

const table = {
  machines: [
    { name: 'pc-i440fx-7.2', alias: 'pc', isDefault: true },
    { name: 'pc-i440fx-7.1', isDefault: false },
    { name: 'pc-q35-7.2', alias: 'q35', isDefault: false },
    { name: 'microvm', isDefault: false },
  ],
};

describe('canonicalMachineType', () => {
  it('resolves aliases to the versioned name and keeps versioned names', () => {
    expect(canonicalMachineType(table, 'pc')).toBe('pc-i440fx-7.2');
    expect(canonicalMachineType(table, 'q35')).toBe('pc-q35-7.2');
    expect(canonicalMachineType(table, 'pc-i440fx-7.1')).toBe('pc-i440fx-7.1');
    expect(canonicalMachineType(table, 'microvm')).toBe('microvm');
  });

  it('gives the default machine for undefined and undefined for an unknown machine', () => {
    expect(canonicalMachineType(table, undefined)).toBe('pc-i440fx-7.2');
    expect(canonicalMachineType(table, 'pc-q35-9.9')).toBeUndefined();
    expect(canonicalMachineType({ machines: [] }, undefined)).toBeUndefined();
  });
});

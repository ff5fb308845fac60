/**
 * virtkit: virtualization management for Node.js, with an embedded QEMU driver.
 *
 * @packageDocumentation
 */
import './builtin-drivers.js';

export * from './stable/index.js';

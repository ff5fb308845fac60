/**
 * The composition root of the drivers: the one place that imports them and registers them with
 * `connect` (which knows drivers only through its registry). Imported by the package entry and the
 * CLI; nothing in the layers below imports it.
 */
import { openQemuDriver } from './drivers/qemu/driver.js';
import { openTestDriver } from './drivers/test/driver.js';
import { registerDriver } from './stable/connect.js';

registerDriver('qemu', openQemuDriver);
registerDriver('test', openTestDriver);

// Tests import the layers directly (src/stable/…), not the package entry: register the built-in
// drivers with connect as src/index.ts does.
import '../../src/builtin-drivers.js';

/*
 * libvirt domain XML: parseDomainXml (xml-parse.ts: the supported subset, the error path format and
 * the list of accepted-but-ignored items), formatDomainXml (xml-format.ts) and the XML reading
 * underneath (xml-tree.ts).
 */
export { formatDomainXml, xmlCanonical } from './xml-format.js';
export { parseDomainXml, QEMU_NS, resolveDomainXml } from './xml-parse.js';

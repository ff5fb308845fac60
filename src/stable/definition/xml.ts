/*
 * libvirt domain XML: parseDomainXml (xml-parse.ts and its xml-parse-*.ts siblings; the error path
 * format and the accepted-but-ignored items are in xml-parse-rules.ts), formatDomainXml
 * (xml-format.ts) and the XML reading underneath (xml-tree.ts).
 */
export { formatDomainXml, xmlCanonical } from './xml-format.js';
export { parseDomainXml, QEMU_NS, resolveDomainXml } from './xml-parse.js';

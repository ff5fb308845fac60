/** A QAPI argument object, as QMP takes it and as QEMU's JSON command-line options take it. */
export type QapiObject = { readonly [key: string]: QapiValue };

/** A QAPI value. */
export type QapiValue = string | number | boolean | null | QapiObject | readonly QapiValue[];

import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { ErrorCode, errorMessage, VirtError } from '../errors.js';
import type { InternalSeam } from '../privileged/seam.js';
import { checkInternalVersion, type InternalApiVersion } from '../privileged/version.js';
import { type InternalApi, internalApiFor } from './api.js';
import { isNativePlugin, loadNativePlugin } from './native-plugin.js';

/**
 * What a static plugin module exports, as `virtkitPlugin` or as its default export.
 *
 * @public
 */
export interface VirtkitPlugin {
  /** The internal API version the plugin was written against, as a literal. */
  readonly apiVersion: InternalApiVersion;
  /** Registers the plugin's handlers; called once, when the driver opens. */
  register(api: InternalApi): void | Promise<void>;
}

const uid = z.number().int().min(0).max(0xffff_fffe);

/** The `controlSocket` setting: on/off, or on for these uids besides the driver's own and root. */
export const controlSocketSetting = z.union([
  z.boolean(),
  z.strictObject({ uids: z.array(uid).max(1024).default([]) }),
]);

const configSchema = z.strictObject({
  plugins: z.array(z.string().min(1)).default([]),
  controlSocket: controlSocketSetting.optional(),
});

/** Plugin paths listed in `<root>/etc/virtkit.json`, if the file exists. */
export function pluginsFromConfig(etcDir: string): string[] {
  return readConfig(etcDir).plugins;
}

/** The `controlSocket` setting of `<root>/etc/virtkit.json`, if the file sets it. */
export function controlSocketFromConfig(etcDir: string): z.output<typeof controlSocketSetting> | undefined {
  return readConfig(etcDir).controlSocket;
}

function readConfig(etcDir: string): z.output<typeof configSchema> {
  const path = join(etcDir, 'virtkit.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { plugins: [] };
    throw new VirtError(ErrorCode.SYSTEM_ERROR, `cannot read ${path}: ${errorMessage(err)}`, { path });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new VirtError(ErrorCode.XML_ERROR, `${path} is not valid JSON: ${errorMessage(err)}`, { path });
  }
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new VirtError(
      ErrorCode.XML_ERROR,
      `${path}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`,
      {
        path,
      },
    );
  }
  return parsed.data;
}

/**
 * Loads each plugin (absolute paths only) and lets it register its handlers: a `.so` is a native
 * plugin with the C ABI of `native/virtkit-internal.h`, anything else a JavaScript module.
 */
export async function loadPlugins(seam: InternalSeam, specifiers: readonly string[]): Promise<void> {
  for (const specifier of specifiers) {
    if (!isAbsolute(specifier)) {
      throw new VirtError(ErrorCode.OPERATION_INVALID, `plugin '${specifier}' must be an absolute path`, {
        path: specifier,
      });
    }
    if (isNativePlugin(specifier)) {
      loadNativePlugin(seam, specifier);
      continue;
    }
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pathToFileURL(specifier).href)) as Record<string, unknown>;
    } catch (err) {
      throw new VirtError(
        ErrorCode.SYSTEM_ERROR,
        `cannot load plugin ${specifier}: ${errorMessage(err)}`,
        {
          path: specifier,
        },
        { cause: err },
      );
    }
    const plugin = (mod['virtkitPlugin'] ?? mod['default']) as Partial<VirtkitPlugin> | undefined;
    if (!plugin || typeof plugin.register !== 'function') {
      throw new VirtError(
        ErrorCode.OPERATION_INVALID,
        `plugin ${specifier} exports no virtkitPlugin { apiVersion, register(api) }`,
        { path: specifier },
      );
    }
    checkInternalVersion(plugin.apiVersion);
    await plugin.register(internalApiFor(seam, `plugin ${specifier}`));
  }
}

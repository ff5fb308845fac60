import { z } from 'zod';
import { domainDefinitionSchema } from '../../../stable/definition/schema.js';

/*
 * What the definition schema accepts, read from the schema itself (as JSON Schema), so the domain
 * capabilities can never claim a value the parser refuses, nor miss one it gained.
 */

type Node = Record<string, unknown>;

let cached: Node | undefined;

function root(): Node {
  cached ??= z.toJSONSchema(domainDefinitionSchema, { io: 'input', unrepresentable: 'any' }) as Node;
  return cached;
}

/** The schema nodes at `path` (`[]` steps into array items); unions fan out into every branch. */
function nodesAt(path: readonly string[]): Node[] {
  let nodes: Node[] = [root()];
  for (const step of path) {
    const next: Node[] = [];
    for (const node of nodes.flatMap(branches)) {
      const child =
        step === '[]' ? node.items : (node.properties as Record<string, unknown> | undefined)?.[step];
      if (child && typeof child === 'object') next.push(child as Node);
    }
    nodes = next;
  }
  if (nodes.length === 0) {
    // The schema changed shape: fail loudly rather than advertise nothing.
    throw new Error(`the definition schema has no field ${path.join('.')}`);
  }
  return nodes.flatMap(branches);
}

function branches(node: Node): Node[] {
  const alternatives = (node.oneOf ?? node.anyOf) as Node[] | undefined;
  return alternatives ? alternatives.flatMap(branches) : [node];
}

/**
 * The values the schema allows at `path` (an enum or literals), in schema order.
 *
 * @internal
 */
export function schemaValues(path: readonly string[]): string[] {
  const values = new Set<string>();
  for (const node of nodesAt(path)) {
    if (Array.isArray(node.enum)) for (const v of node.enum) values.add(String(v));
    if (node.const !== undefined) values.add(String(node.const));
  }
  return [...values];
}

/**
 * The largest number the schema allows at `path`.
 *
 * @internal
 */
export function schemaMaximum(path: readonly string[]): number {
  const maxima = nodesAt(path)
    .map((n) => n.maximum)
    .filter((m): m is number => typeof m === 'number');
  if (maxima.length === 0) throw new Error(`the definition schema sets no maximum for ${path.join('.')}`);
  return Math.max(...maxima);
}

/**
 * Whether the schema has a field at `path`.
 *
 * @internal
 */
export function schemaHas(path: readonly string[]): boolean {
  try {
    nodesAt(path);
    return true;
  } catch {
    return false;
  }
}

/** The console's own strings (Thai first, English beside), kept apart from the chat's. */
import type { Lang } from "../i18n";

export type Vars = Record<string, string | number>;
export type Table<K extends string> = Record<K, string>;

/** A translator over a pair of tables: `{name}` in a string is filled from `vars`. */
export function translator<K extends string>(tables: Record<Lang, Table<K>>, lang: Lang): (k: K, v?: Vars) => string {
  return (k, v = {}) => tables[lang][k].replace(/\{(\w+)\}/g, (_, name: string) => String(v[name] ?? ""));
}

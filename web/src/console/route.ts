/** Routing by the URL's fragment (`#/admin/officials`): no server routes, back and forward work. */
import { useEffect, useState } from "preact/hooks";

export const parseRoute = (hash: string): string[] => hash.replace(/^#\/?/, "").split("/").filter((s) => s !== "").map(decodeURIComponent);

export const go = (path: string[]): void => {
  location.hash = "/" + path.map(encodeURIComponent).join("/");
};

export function useRoute(): string[] {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = (): void => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

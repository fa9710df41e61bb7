/** The crypto surface, also bundled alone for the node unit tests. */
export * from "./bytes";
export * from "./errors";
export * from "./formats";
export * from "./primitives";
export * from "./safety";
export * from "./senderkeys";
export * from "./session";
export { loadSodium } from "./sodium";
export * from "./content";
export * from "./merkle";
export * from "./attachment";

/** Reported in handshakes, the node registry and `tunnox --version`. Keep in step with package.json. */
export const VERSION = '0.1.0';

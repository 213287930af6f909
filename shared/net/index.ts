export * from './pipe.js';
export * from './frames.js';
export * from './control.js';

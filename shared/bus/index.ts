export { createMemoryBus } from './memory.js';
export { ChangeNoticeSchema, createNatsBus, noticeSubject } from './nats.js';
export type { ChangeBus, ChangeNotice } from '../contracts/notices.js';

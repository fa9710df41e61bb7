/** Strings of the administration views. */
import type { Lang } from "../../i18n";
import { translator, type Table, type Vars } from "../strings";

const th = {
  title: "ผู้ดูแลระบบ",
  tabs: "ส่วนงานผู้ดูแล",
  agencies: "หน่วยงาน",
  officials: "เจ้าหน้าที่",
  importTab: "นำเข้า",
  exportTab: "ส่งออก",
  loading: "กำลังโหลด…",
  noAgencies: "ยังไม่มีหน่วยงาน",
  agencyTree: "โครงสร้างหน่วยงาน",
  code: "รหัสหน่วยงาน",
  nameTh: "ชื่อภาษาไทย",
  nameEn: "ชื่อภาษาอังกฤษ",
  parent: "สังกัด",
  topLevel: "(ระดับบนสุด: กระทรวง)",
  newAgency: "เพิ่มหน่วยงาน",
  create: "สร้าง",
  save: "บันทึก",
  cancel: "ยกเลิก",
  rename: "แก้ไขชื่อ",
  move: "ย้าย",
  moveTo: "ย้ายไปอยู่ใต้",
  created: "สร้างแล้ว",
  saved: "บันทึกแล้ว",
  errForbidden: "คุณไม่มีสิทธิ์ทำรายการนี้",
  errNotFound: "ไม่พบรายการนี้",
  errInvalid: "ข้อมูลไม่ถูกต้อง: {detail}",
  errConflict: "ซ้ำกับที่มีอยู่แล้ว หรือมีการเปลี่ยนแปลงระหว่างนี้: {detail}",
  errGeneric: "เกิดข้อผิดพลาด ลองอีกครั้ง",
};

export type AdminKey = keyof typeof th;

const en: Table<AdminKey> = {
  title: "Administration",
  tabs: "Administration sections",
  agencies: "Agencies",
  officials: "Officials",
  importTab: "Import",
  exportTab: "Export",
  loading: "Loading…",
  noAgencies: "No agencies yet",
  agencyTree: "Agency tree",
  code: "Agency code",
  nameTh: "Thai name",
  nameEn: "English name",
  parent: "Parent",
  topLevel: "(top level: a ministry)",
  newAgency: "New agency",
  create: "Create",
  save: "Save",
  cancel: "Cancel",
  rename: "Rename",
  move: "Move",
  moveTo: "Move under",
  created: "Created",
  saved: "Saved",
  errForbidden: "You may not do this",
  errNotFound: "Not found",
  errInvalid: "Not accepted: {detail}",
  errConflict: "Already taken, or changed meanwhile: {detail}",
  errGeneric: "Something went wrong; try again",
};

export type AT = (k: AdminKey, v?: Vars) => string;
export const adminT = (lang: Lang): AT => translator({ th, en }, lang);

/**
 * Enrolment letters: one A4 page per official, in Thai, with the node's
 * address and the one-time code as text and as a QR code (the content is
 * the code exactly as typed, which the app's enrolment scanner reads).
 * Codes live in memory only while this screen is open: the node keeps only
 * their hash, so a lost letter means a new code, not a reprint.
 */
import { useEffect, useState } from "preact/hooks";
import type { Device } from "../../client";
import { formatTime, type Lang } from "../../i18n";
import { qrSvg } from "../../ui/qr";
import { translator } from "../strings";
import { agencyName, listAgencies, officialName, type Agency, type Issued } from "./api";

const LETTER = {
  th: {
    heading: "หนังสือแจ้งการลงทะเบียนใช้งานจีแชต",
    to: "เรียน {name}",
    intro: "ท่านได้รับสิทธิ์ใช้งานจีแชต แชตที่เข้ารหัสตั้งแต่ต้นทางถึงปลายทางสำหรับเจ้าหน้าที่รัฐ ลงทะเบียนอุปกรณ์ของท่านดังนี้",
    step1: "เปิด {url} ด้วยเบราว์เซอร์บนโทรศัพท์หรือคอมพิวเตอร์ของท่าน",
    step2: "ใส่รหัสลงทะเบียนด้านล่าง หรือกด \"สแกน QR\" แล้วสแกนรหัส QR นี้",
    step3: "ตั้งชื่ออุปกรณ์ แล้วกด \"ลงทะเบียน\"",
    code: "รหัสลงทะเบียน",
    url: "ที่อยู่ระบบ",
    expires: "ใช้ได้ครั้งเดียว ภายใน {at}",
    keep: "อย่าให้ผู้อื่นเห็น คัดลอก หรือถ่ายภาพหนังสือนี้ หากรหัสหมดอายุหรือสูญหาย โปรดติดต่อผู้ดูแลระบบเพื่อออกรหัสใหม่",
    qr: "รหัส QR สำหรับลงทะเบียน",
  },
  en: {
    heading: "G-Chat enrolment letter",
    to: "To {name}",
    intro: "You may now use G-Chat, the end-to-end encrypted chat for government officials. Enrol your device as follows.",
    step1: "Open {url} in the browser of your phone or computer",
    step2: "Type the enrolment code below, or press \"Scan QR\" and scan this QR code",
    step3: "Name the device and press \"Enrol\"",
    code: "Enrolment code",
    url: "Address",
    expires: "Single use, until {at}",
    keep: "Do not show, copy or photograph this letter. If the code expires or is lost, ask your administrator for a new one.",
    qr: "QR code for enrolment",
  },
};

const chrome = {
  th: { title: "หนังสือแจ้งการลงทะเบียน ({n} ฉบับ)", print: "พิมพ์", close: "ปิด (รหัสจะไม่แสดงอีก)", note: "รหัสแสดงครั้งนี้ครั้งเดียว พิมพ์ก่อนปิด", lang: "ภาษาของหนังสือ" },
  en: { title: "Enrolment letters ({n})", print: "Print", close: "Close (the codes are not shown again)", note: "The codes are shown this once: print before closing", lang: "Letter language" },
};

export function Letters({ lang, device, issued, onClose }: { lang: Lang; device: Device; issued: Issued[]; onClose: () => void }) {
  const [agencies, setAgencies] = useState<Agency[]>([]);
  const [letterLang, setLetterLang] = useState<Lang>("th"); // Thai unless asked
  const letter = translator(LETTER, letterLang);
  useEffect(() => { listAgencies(device).then(setAgencies, () => undefined); }, []);
  const c = chrome[lang];
  const url = location.origin + "/";
  const byId = new Map(agencies.map((a) => [a.id, a]));
  return (
    <section class="stack letters-screen">
      <div class="no-print stack">
        <h3>{c.title.replace("{n}", String(issued.length))}</h3>
        <p class="status">{c.note}</p>
        <div class="actions">
          <label>{c.lang}<select name="letter-lang" value={letterLang} onChange={(e) => setLetterLang(e.currentTarget.value as Lang)}><option value="th">ไทย</option><option value="en">English</option></select></label>
          <button type="button" onClick={() => print()}>{c.print}</button>
          <button type="button" class="secondary" onClick={onClose}>{c.close}</button>
        </div>
      </div>
      {issued.map(({ official, code, expiresAt }) => {
        const agency = byId.get(official.agency_id);
        return (
          <article class="letter" lang={letterLang} key={official.id} data-testid="letter" data-official={official.id}>
            <h1>{letter("heading")}</h1>
            <p>{letter("to", { name: officialName(official, letterLang) })}</p>
            <p class="status">{[official.position, agency ? agencyName(agency, letterLang) : official.agency_code].filter((x) => x).join(" · ")}</p>
            <p>{letter("intro")}</p>
            <ol>
              <li>{letter("step1", { url })}</li>
              <li>{letter("step2")}</li>
              <li>{letter("step3")}</li>
            </ol>
            <div class="letter-code">
              <div class="qr" role="img" aria-label={letter("qr")} data-testid="letter-qr" dangerouslySetInnerHTML={{ __html: qrSvg(code, 6) }} />
              <dl>
                <dt>{letter("code")}</dt><dd class="code-text" data-testid="letter-code">{code}</dd>
                <dt>{letter("url")}</dt><dd>{url}</dd>
                <dd>{letter("expires", { at: formatTime(letterLang, expiresAt) })}</dd>
              </dl>
            </div>
            <p class="keep">{letter("keep")}</p>
          </article>
        );
      })}
    </section>
  );
}

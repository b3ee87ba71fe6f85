// A machine emulator on node-opcua, for autocell's OPC UA tests (issue 14).
//
// It implements tests/opcua/CONTRACT.md, the contract the asyncua emulator
// (tests/helpers/opcua_server.py) implements too, so one backend and one set of
// tests serve two OPC UA stacks that were not written here.
//
// Theory of operation
// -------------------
// * The address space is the standard nodesets shipped by node-opcua-nodesets
//   (UA, DI, IA (which Machinery requires), Machinery, ISA95 job control,
//   Machinery Jobs): every structure the client sees (ISA95JobOrderDataType,
//   ISA95JobResponseDataType, ...) is the nodeset's own DataType, so a generic
//   client that loads data type definitions builds and reads them.
//   Namespaces are found by URI, never by index.
// * One object per machine id under the Machinery `Machines` folder, with its
//   Identification, MachineryItemState, MachineryOperationMode, JobManagement
//   (JobOrderControl + JobOrderResults) and a Monitoring folder of readings.
// * --packml ids are PackML units (OPC 30050) under Objects instead, from the PackML
//   nodeset: packml_unit.mjs, CONTRACT.md "PackML units".
// * A machine runs at most one job: StoreAndStart makes it Running for
//   duration_s / speed wall seconds, then Ended.  JobOrderList is rewritten on
//   every transition, so a subscribed client gets a data change each time.
//   Where the contract is silent: Abort of a job that is not running and Clear
//   of one that has not ended return 2 (InvalidJobOrderStatus), and
//   RequestJobResponseByJobOrderID of a running job returns its state with no
//   JobResponseData (Quality comes with the end).
// * The job log (--job-log) is the emulator's own record, one JSON line per
//   event, fsynced before the call returns, so it survives kill -9.  Read at
//   start-up, it gives the JobOrderIDs started before a restart: the machine
//   itself refuses a duplicate.  (An id counts as seen once it was started; a
//   refused call does not consume it.)
// * Security: secure mode exposes only Basic256Sha256/SignAndEncrypt; the
//   certificate manager's trusted folder holds exactly the --trust-client
//   certificates and nothing unknown is accepted.  The server's own certificate
//   lives in --pki and is reused on restart (its ApplicationUri then comes from
//   the certificate, so the identity does not change).  --port 0 is resolved
//   to a free port before anything else, since the certificate names it.
//   Without --users every user name is refused (only anonymous logs in).
// * The ready file is written (tmp + rename) once the server listens;
//   SIGTERM/SIGINT shut it down cleanly.

import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { X509Certificate } from "node:crypto";
import { parseArgs } from "node:util";
import opcua from "node-opcua";
import nodesetsPkg from "node-opcua-nodesets";
import { PackMLUnit } from "./packml_unit.mjs";

const {
    OPCUAServer, OPCUACertificateManager, SecurityPolicy, MessageSecurityMode,
    StatusCodes, DataType, VariantArrayType, promoteToStateMachine, standardUnits,
} = opcua;
const { nodesets } = nodesetsPkg;

const URI = {
    di: "http://opcfoundation.org/UA/DI/",
    machinery: "http://opcfoundation.org/UA/Machinery/",
    isa95: "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/",
    jobs: "http://opcfoundation.org/UA/Machinery/Jobs/",
    emu: "urn:autocell:emulator",
};
const STATE_NUMBER = { NotAllowedToStart: 1, AllowedToStart: 2, Running: 3, Interrupted: 4, Ended: 5, Aborted: 6 };
const RETURN = { ok: 0, unknownJobOrderId: 1, invalidJobOrderStatus: 2, unableToAccept: 3 };
const READING_PERIOD_MS = 500;
// node-opcua writes a UInt64 as [high, low] and cannot guess it is a scalar.
const uint64 = (n) => ({ dataType: DataType.UInt64, arrayType: VariantArrayType.Scalar, value: [0, n] });

// --- command line -------------------------------------------------------------

function parseCommandLine(argv) {
    const { values } = parseArgs({
        args: argv,
        options: {
            port: { type: "string", default: "0" },
            machines: { type: "string" },
            speed: { type: "string", default: "1.0" },
            "job-log": { type: "string" },
            pki: { type: "string" },
            "trust-client": { type: "string", multiple: true, default: [] },
            security: { type: "string", default: "secure" },
            users: { type: "string" },
            "refuse-start": { type: "string", default: "" },
            packml: { type: "string", default: "" },
            "ready-file": { type: "string" },
            seed: { type: "string", default: "1" },
        },
    });
    const fail = (why) => { throw new Error(`machine_emulator: ${why}`); };
    const list = (s) => (s || "").split(",").map((x) => x.trim()).filter(Boolean);
    const machines = list(values.machines);
    const packml = list(values.packml);
    if (machines.length + packml.length === 0) fail("--machines a,b,c (or --packml a,b) is required");
    for (const flag of ["job-log", "pki", "ready-file"]) if (!values[flag]) fail(`--${flag} is required`);
    if (!["secure", "insecure"].includes(values.security)) fail("--security is secure or insecure");
    const speed = Number(values.speed);
    if (!(speed > 0)) fail(`--speed must be a positive number, not ${values.speed}`);
    return {
        port: Number(values.port), machines, packml, speed, seed: Number(values.seed),
        jobLog: values["job-log"], pki: values.pki, readyFile: values["ready-file"],
        trustClient: values["trust-client"], secure: values.security === "secure",
        users: values.users ? JSON.parse(fs.readFileSync(values.users, "utf8")) : null,
        refuseStart: new Set(list(values["refuse-start"])),
    };
}

// --- the job log ----------------------------------------------------------------

class JobLog {
    constructor(file) {
        this.started = new Set();
        this.ended = new Map(); // machine -> number of "ended" lines
        if (fs.existsSync(file)) {
            for (const line of fs.readFileSync(file, "utf8").split("\n")) {
                if (!line.trim()) continue;
                let entry;
                try { entry = JSON.parse(line); } catch { continue; } // a line torn by kill -9
                if (entry.event === "started") this.started.add(entry.job);
                if (entry.event === "ended") this.ended.set(entry.machine, (this.ended.get(entry.machine) ?? 0) + 1);
            }
        }
        this.fd = fs.openSync(file, "a");
    }

    append(machine, job, event, why) {
        const entry = { t: new Date().toISOString(), machine, job, event };
        if (why) entry.why = why;
        fs.writeSync(this.fd, JSON.stringify(entry) + "\n");
        fs.fsyncSync(this.fd);
        if (event === "started") this.started.add(job);
    }
}

// --- seeded readings --------------------------------------------------------------

function mulberry32(seed) {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

function randomWalk(random, low, high, step) {
    let value = low + (high - low) * random();
    return () => {
        value = Math.min(high, Math.max(low, value + (random() * 2 - 1) * step));
        return value;
    };
}

// --- one machine ------------------------------------------------------------------

// The address space of one machine, per CONTRACT.md, and the nodes its jobs update.
function buildMachineNodes(addressSpace, ns, id) {
    const idx = (uri) => addressSpace.getNamespaceIndex(uri);
    const [diNs, mNs, isaNs, jobsNs] = [idx(URI.di), idx(URI.machinery), idx(URI.isa95), idx(URI.jobs)];
    const objectType = (name, nsIndex) => addressSpace.findObjectType(name, nsIndex);

    const machine = ns.addObject({ browseName: id, organizedBy: addressSpace.findNode(`ns=${mNs};i=1001`) });

    const identification = objectType("MachineIdentificationType", mNs).instantiate({
        browseName: { name: "Identification", namespaceIndex: mNs }, addInOf: machine, namespace: ns,
    });
    const setProperty = (parent, name, nsIndex, value) => {
        const node = parent.getChildByName(name, nsIndex);
        node.setValueFromSource({ dataType: node.dataTypeObj.basicDataType ?? DataType.String, value });
    };
    setProperty(identification, "Manufacturer", diNs, { text: "autocell emulator" });
    setProperty(identification, "SerialNumber", diNs, id);
    setProperty(identification, "ProductInstanceUri", diNs, `urn:autocell:emulator:${id}`);

    const folder = (browseName) => ns.addObject({ typeDefinition: "FolderType", componentOf: machine, browseName });
    const blocks = folder({ name: "MachineryBuildingBlocks", namespaceIndex: mNs });
    const itemState = objectType("MachineryItemState_StateMachineType", mNs).instantiate({
        browseName: { name: "MachineryItemState", namespaceIndex: mNs }, componentOf: blocks, namespace: ns,
    });
    const operationMode = objectType("MachineryOperationModeStateMachineType", mNs).instantiate({
        browseName: { name: "MachineryOperationMode", namespaceIndex: mNs }, componentOf: blocks, namespace: ns,
    });
    const jobManagement = objectType("JobManagementType", jobsNs).instantiate({
        browseName: { name: "JobManagement", namespaceIndex: jobsNs }, componentOf: blocks, namespace: ns,
        optionals: ["JobOrderControl.StoreAndStart", "JobOrderControl.Abort", "JobOrderControl.Clear",
            "JobOrderResults.JobOrderResponseList"],
    });
    const control = jobManagement.getComponentByName("JobOrderControl", jobsNs);
    const results = jobManagement.getComponentByName("JobOrderResults", jobsNs);

    const monitoring = folder("Monitoring");
    const reading = (name, engineeringUnits, low, high) => ns.addAnalogDataItem({
        componentOf: monitoring, browseName: name, dataType: "Double", engineeringUnits,
        engineeringUnitsRange: { low, high }, value: { dataType: DataType.Double, value: low },
    });

    const itemStateMachine = promoteToStateMachine(itemState);
    itemStateMachine.setState("NotExecuting");
    promoteToStateMachine(operationMode).setState("Processing");
    return {
        machine, itemState: itemStateMachine,
        storeAndStart: control.getMethodByName("StoreAndStart", isaNs),
        abort: control.getMethodByName("Abort", isaNs),
        clear: control.getMethodByName("Clear", isaNs),
        jobOrderList: control.getComponentByName("JobOrderList", isaNs),
        requestResponse: results.getMethodByName("RequestJobResponseByJobOrderID", isaNs),
        responseList: results.getComponentByName("JobOrderResponseList", isaNs),
        spindleLoad: reading("SpindleLoad", standardUnits.percent, 0, 100),
        temperature: reading("Temperature", standardUnits.degree_celsius, 20, 80),
        isaNs,
    };
}

// A machine's jobs: the ISA95 job order state machine, reduced to what the contract needs.
class Machine {
    constructor(id, nodes, { addressSpace, log, speed, refuseStart, random }) {
        Object.assign(this, { id, nodes, addressSpace, log, speed, refuseStart });
        this.jobs = new Map(); // JobOrderID -> {order, state, startedAt, endedAt, timer, cleared}
        const dataType = (name) => addressSpace.findDataType(name, nodes.isaNs);
        this.types = {
            state: dataType("ISA95StateDataType"), param: dataType("ISA95ParameterDataType"),
            orderAndState: dataType("ISA95JobOrderAndStateDataType"), response: dataType("ISA95JobResponseDataType"),
        };
        this.bindMethods();
        this.publish();
        const spindle = randomWalk(random, 0, 100, 5);
        const temperature = randomWalk(random, 20, 80, 1);
        this.readings = setInterval(() => {
            nodes.spindleLoad.setValueFromSource({ dataType: DataType.Double, value: spindle() });
            nodes.temperature.setValueFromSource({ dataType: DataType.Double, value: temperature() });
        }, READING_PERIOD_MS);
    }

    bindMethods() {
        const returns = (status) => ({
            statusCode: StatusCodes.Good,
            outputArguments: [uint64(status)],
        });
        const jobOrderId = (args) => String(args[0].value ?? "");
        // node-opcua tells a promise-returning method by its two parameters (arguments, context).
        // A bug here is printed (node-opcua only answers BadInternalError).
        const bind = (method, call) => method.bindMethod(async (args, _context) => {
            try {
                return call(args);
            } catch (err) {
                console.error(`machine ${this.id}: ${method.browseName.name} failed:`, err);
                return { statusCode: StatusCodes.BadInternalError };
            }
        });
        bind(this.nodes.storeAndStart, (args) => {
            if (this.refuseStart) {
                this.log.append(this.id, args[0].value?.jobOrderID ?? "", "refused", "refuse-start");
                return { statusCode: StatusCodes.BadUserAccessDenied };
            }
            return returns(this.storeAndStart(args[0].value));
        });
        bind(this.nodes.abort, (args) => returns(this.abort(jobOrderId(args))));
        bind(this.nodes.clear, (args) => returns(this.clear(jobOrderId(args))));
        bind(this.nodes.requestResponse, (args) => {
            const job = this.jobs.get(jobOrderId(args));
            return {
                statusCode: StatusCodes.Good,
                outputArguments: [
                    { dataType: DataType.ExtensionObject, value: job ? this.response(jobOrderId(args), job) : null },
                    uint64(job ? RETURN.ok : RETURN.unknownJobOrderId),
                ],
            };
        });
    }

    storeAndStart(order) {
        const id = order?.jobOrderID; // node-opcua's field names: JobOrderID -> jobOrderID, ID stays ID
        if (!id) return RETURN.unableToAccept;
        const refuse = (why) => { this.log.append(this.id, id, "refused", why); return RETURN.unableToAccept; };
        if (this.log.started.has(id)) return refuse("duplicate JobOrderID");
        if (this.running()) return refuse(`busy with ${this.running()}`);
        const duration = (order.jobOrderParameters || []).find((p) => p.ID === "duration_s");
        const durationS = Number(duration?.value?.value ?? 0);
        this.log.append(this.id, id, "started");
        const job = { order, state: "Running", startedAt: new Date(), endedAt: null, cleared: false };
        job.timer = setTimeout(() => this.end(id, "Ended", "ended"), (durationS / this.speed) * 1000);
        this.jobs.set(id, job);
        this.nodes.itemState.setState("Executing");
        this.publish();
        return RETURN.ok;
    }

    abort(id) {
        const job = this.jobs.get(id);
        if (!job || job.cleared) return RETURN.unknownJobOrderId;
        if (!["Running", "AllowedToStart"].includes(job.state)) return RETURN.invalidJobOrderStatus;
        clearTimeout(job.timer);
        this.end(id, "Aborted", "aborted");
        return RETURN.ok;
    }

    clear(id) {
        const job = this.jobs.get(id);
        if (!job || job.cleared) return RETURN.unknownJobOrderId;
        if (!["Ended", "Aborted"].includes(job.state)) return RETURN.invalidJobOrderStatus;
        job.cleared = true;
        this.log.append(this.id, id, "cleared");
        this.publish();
        return RETURN.ok;
    }

    end(id, state, event) {
        const job = this.jobs.get(id);
        Object.assign(job, { state, endedAt: new Date(), timer: null });
        this.log.append(this.id, id, event);
        this.nodes.itemState.setState("NotExecuting");
        this.publish();
    }

    running() {
        for (const [id, job] of this.jobs) if (job.state === "Running") return id;
        return null;
    }

    state(job) {
        return [this.addressSpace.constructExtensionObject(this.types.state, {
            stateText: { text: job.state }, stateNumber: STATE_NUMBER[job.state],
        })];
    }

    response(id, job) {
        const done = job.state === "Ended" || job.state === "Aborted";
        return this.addressSpace.constructExtensionObject(this.types.response, {
            jobResponseID: `${id}/response`, jobOrderID: id,
            startTime: job.startedAt, endTime: job.endedAt ?? undefined,
            jobState: this.state(job),
            jobResponseData: done ? [this.addressSpace.constructExtensionObject(this.types.param, {
                ID: "Quality", value: { dataType: DataType.String, value: "ok" },
            })] : [],
        });
    }

    // Rewrites JobOrderList and JobOrderResponseList: one data change per transition.
    publish() {
        const array = (value) => ({ dataType: DataType.ExtensionObject, arrayType: VariantArrayType.Array, value });
        const jobs = [...this.jobs.entries()];
        this.nodes.jobOrderList.setValueFromSource(array(jobs.filter(([, job]) => !job.cleared).map(([, job]) =>
            this.addressSpace.constructExtensionObject(this.types.orderAndState, { jobOrder: job.order, state: this.state(job) }))));
        this.nodes.responseList.setValueFromSource(array(jobs.filter(([, job]) => ["Ended", "Aborted"].includes(job.state))
            .map(([id, job]) => this.response(id, job))));
    }

    stop() {
        clearInterval(this.readings);
        for (const job of this.jobs.values()) clearTimeout(job.timer);
    }
}

// --- certificates -----------------------------------------------------------------

// The server's own certificate, created once in --pki and reused after (its identity).
async function serverCertificate(certificateManager, pki, port) {
    const certificateFile = path.join(pki, "own", "certs", "server_cert.pem");
    const privateKeyFile = path.join(pki, "own", "private", "private_key.pem");
    if (!fs.existsSync(certificateFile)) {
        await certificateManager.createSelfSignedCertificate({
            applicationUri: `urn:autocell:emulator:${port}`, subject: "/CN=autocell emulator/O=autocell",
            dns: ["localhost"], ip: ["127.0.0.1"], startDate: new Date(), validity: 3650,
            outputFile: certificateFile,
        });
    }
    const certificate = new X509Certificate(fs.readFileSync(certificateFile));
    fs.writeFileSync(path.join(pki, "server_cert.der"), certificate.raw);
    const applicationUri = /URI:([^,]+)/.exec(certificate.subjectAltName || "")[1];
    return { certificateFile, privateKeyFile, applicationUri };
}

// The trusted folder holds exactly the --trust-client certificates, nothing left from a previous run.
async function trustExactly(certificateManager, files) {
    const trusted = path.join(certificateManager.rootDir, "trusted", "certs");
    for (const name of fs.readdirSync(trusted)) fs.rmSync(path.join(trusted, name), { force: true });
    for (const file of files) await certificateManager.trustCertificate(new X509Certificate(fs.readFileSync(file)).raw);
}

function freePort() {
    return new Promise((resolve, reject) => {
        const probe = net.createServer().once("error", reject);
        probe.listen(0, "127.0.0.1", () => { const { port } = probe.address(); probe.close(() => resolve(port)); });
    });
}

function writeAtomically(file, text) {
    fs.writeFileSync(`${file}.tmp`, text);
    fs.renameSync(`${file}.tmp`, file);
}

// --- main ---------------------------------------------------------------------------

async function main() {
    const options = parseCommandLine(process.argv.slice(2));
    const port = options.port || await freePort();
    fs.mkdirSync(options.pki, { recursive: true });
    const certificateManager = new OPCUACertificateManager({
        rootFolder: options.pki, automaticallyAcceptUnknownCertificate: false,
    });
    await certificateManager.initialize();
    const { certificateFile, privateKeyFile, applicationUri } = await serverCertificate(certificateManager, options.pki, port);
    await trustExactly(certificateManager, options.trustClient);
    // X509 user tokens are offered by node-opcua whatever we say; an empty trust list of its
    // own (instead of a default one in the user's home) makes sure none is ever accepted.
    const userCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(options.pki, "users"), automaticallyAcceptUnknownCertificate: false,
    });
    await userCertificateManager.initialize();

    const users = options.users;
    const server = new OPCUAServer({
        port, host: "127.0.0.1", hostname: "127.0.0.1",
        nodeset_filename: [nodesets.standard, nodesets.di, nodesets.ia, nodesets.machinery, nodesets.isa95JobControl, nodesets.machineryJobs, nodesets.packML],
        serverInfo: { applicationUri, productUri: "urn:autocell:emulator", applicationName: { text: "autocell machine emulator (node-opcua)" } },
        buildInfo: { productName: "autocell machine emulator", manufacturerName: "autocell" },
        serverCertificateManager: certificateManager, userCertificateManager, certificateFile, privateKeyFile,
        securityPolicies: options.secure ? [SecurityPolicy.Basic256Sha256] : [SecurityPolicy.None],
        securityModes: options.secure ? [MessageSecurityMode.SignAndEncrypt] : [MessageSecurityMode.None],
        allowAnonymous: !users,
        userManager: { isValidUser: (username, password) => !!users && Object.hasOwn(users, username) && users[username] === password },
    });
    await server.initialize();

    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace(URI.emu);
    const log = new JobLog(options.jobLog);
    const machines = options.machines.map((id, i) => new Machine(id, buildMachineNodes(addressSpace, ns, id), {
        addressSpace, log, speed: options.speed, refuseStart: options.refuseStart.has(id),
        random: mulberry32(options.seed * 1000003 + i),
    }));

    const units = options.packml.map((id) => new PackMLUnit(id, {
        addressSpace, ns, log, speed: options.speed, refuseStart: options.refuseStart.has(id),
        ended: log.ended.get(id) ?? 0,
    }));

    await server.start();
    const endpoint = `opc.tcp://127.0.0.1:${port}`;
    writeAtomically(options.readyFile, JSON.stringify({ port, pid: process.pid, endpoint }));

    let stopping = false;
    const shutdown = async () => {
        if (stopping) return;
        stopping = true;
        for (const machine of [...machines, ...units]) machine.stop();
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", shutdown);
    process.on("SIGINT", shutdown);
}

main().catch((err) => {
    console.error(err.stack || String(err));
    process.exit(1);
});

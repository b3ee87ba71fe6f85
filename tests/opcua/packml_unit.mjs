// A PackML unit (OPC 30050) for the node-opcua machine emulator (CONTRACT.md, "PackML units").
//
// Theory of operation
// -------------------
// * One PackMLBaseObjectType instance per --packml id, under Objects, from the PackML
//   nodeset shipped by node-opcua-nodesets, with the optional nodes autocell's `packml`
//   profile uses: BaseStateMachine/Abort and Clear, MachineState/Stop and Reset,
//   ExecuteState/Start, Reset, Hold and Unhold, Status/Parameter, Admin/ProdProcessedCount
//   and ProdDefectiveCount.  Its three state machines are promoted and set by name, so a
//   subscribed client sees every CurrentState change.
// * It powers up reset: BaseStateMachine Cleared, MachineState Running, ExecuteState Idle.
// * Start(Parameter[]) in Idle: the descriptor ID 1 carries the job id in its Name, ID 2
//   the duration (cell seconds) in its Value; both are copied to Status/Parameter.
//   Starting, Execute for duration / speed wall seconds, Completing, then the processed
//   counter moves and the unit is Complete.  Every acting state (Starting, Completing,
//   Resetting, Aborting, Clearing, Stopping, Holding, Unholding) lasts ACT_MS.
//   A Start in another state fails with BadInvalidState, one whose job id is in the job
//   log (ever started) with BadInvalidArgument — the machine refuses a duplicate —, one on
//   a --refuse-start unit with BadUserAccessDenied; each is logged "refused".
// * ExecuteState/Reset: Complete -> Resetting -> Idle.  Abort: anything -> Aborting ->
//   Aborted (a running job logged "aborted", why "Abort").  Clear: Aborted -> Clearing ->
//   Stopped.  MachineState/Stop: Running -> Stopping -> Stopped (the job "aborted", why
//   "Stop").  MachineState/Reset: Stopped -> Resetting -> Idle.  Hold: Execute -> Holding ->
//   Held, the job's clock paused; Unhold: Held -> Unholding -> Execute.  Any other
//   command in the wrong state fails with BadInvalidState.
// * The processed counter is retentive: a restarted unit starts at the number of "ended"
//   lines for it in the job log.  A killed unit loses its running job (neither ended nor
//   aborted in the log) and its Status/Parameter.

import opcua from "node-opcua";

const { StatusCodes, DataType, VariantArrayType, promoteToStateMachine, standardUnits } = opcua;

export const PACKML_URI = "http://opcfoundation.org/UA/PackML/";
const ACT_MS = 20;
const JOB_PARAMETER = 1;
const DURATION_PARAMETER = 2;
const ACTIVE = new Set(["Starting", "Execute", "Completing", "Holding", "Held", "Unholding"]);
const OPTIONALS = [
    "BaseStateMachine.Abort", "BaseStateMachine.Clear",
    "BaseStateMachine.MachineState.Stop", "BaseStateMachine.MachineState.Reset",
    "BaseStateMachine.MachineState.ExecuteState.Start", "BaseStateMachine.MachineState.ExecuteState.Reset",
    "BaseStateMachine.MachineState.ExecuteState.Hold", "BaseStateMachine.MachineState.ExecuteState.Unhold",
    "Status.Parameter", "Admin.ProdProcessedCount", "Admin.ProdDefectiveCount",
];

export class PackMLUnit {
    constructor(id, { addressSpace, ns, log, speed, refuseStart, ended }) {
        Object.assign(this, { id, addressSpace, log, speed, refuseStart });
        const p = addressSpace.getNamespaceIndex(PACKML_URI);
        this.p = p;
        const unit = addressSpace.findObjectType("PackMLBaseObjectType", p).instantiate({
            browseName: id, organizedBy: addressSpace.rootFolder.objects, namespace: ns, optionals: OPTIONALS,
        });
        const base = unit.getComponentByName("BaseStateMachine", p);
        const machine = base.getComponentByName("MachineState", p);
        const execute = machine.getComponentByName("ExecuteState", p);
        this.sm = { base: promoteToStateMachine(base), machine: promoteToStateMachine(machine),
            execute: promoteToStateMachine(execute) };
        const status = unit.getComponentByName("Status", p);
        const admin = unit.getComponentByName("Admin", p);
        this.parameter = status.getComponentByName("Parameter", p);
        this.processedNode = admin.getComponentByName("ProdProcessedCount", p);
        this.defectiveNode = admin.getComponentByName("ProdDefectiveCount", p);
        this.countType = addressSpace.findDataType("PackMLCountDataType", p);
        this.processed = ended;
        this.job = null;     // {id, remainingMs, since, timer}
        this.timer = null;
        const monitoring = ns.addObject({ typeDefinition: "FolderType", componentOf: unit, browseName: "Monitoring" });
        this.temperature = ns.addAnalogDataItem({
            componentOf: monitoring, browseName: "Temperature", dataType: "Double",
            engineeringUnits: standardUnits.degree_celsius, engineeringUnitsRange: { low: 20, high: 80 },
            value: { dataType: DataType.Double, value: 20 },
        });
        this.set("base", "Cleared");
        this.set("machine", "Running");
        this.set("execute", "Idle");
        this.publishCounts();
        this.parameter.setValueFromSource({ dataType: DataType.ExtensionObject, arrayType: VariantArrayType.Array, value: [] });
        this.bind(execute, "Start", (args) => this.start(args));
        this.bind(execute, "Reset", () => this.expect("execute", "Complete", () => this.act("execute", "Resetting", "Idle")));
        this.bind(execute, "Hold", () => this.expect("execute", "Execute", () => this.hold()));
        this.bind(execute, "Unhold", () => this.expect("execute", "Held", () => this.unhold()));
        this.bind(base, "Abort", () => this.abort());
        // the inner machine first: a client never sees Cleared over a stale Running
        this.bind(base, "Clear", () => this.expect("base", "Aborted", () => {
            this.act("machine", "Clearing", "Stopped");
            this.set("base", "Cleared");
        }));
        this.bind(machine, "Stop", () => this.expect("machine", "Running", () => {
            this.drop("Stop");
            this.act("machine", "Stopping", "Stopped");
        }));
        this.bind(machine, "Reset", () => this.expect("machine", "Stopped", () => {
            this.set("machine", "Running");
            this.act("execute", "Resetting", "Idle");
        }));
    }

    state(which) { return this.sm[which].getCurrentState()?.split(":").pop() ?? ""; }
    set(which, name) { this.sm[which].setState(name); }

    bind(parent, name, call) {
        parent.getMethodByName(name, this.p).bindMethod(async (args, _context) => {
            try {
                return { statusCode: call(args) ?? StatusCodes.Good };
            } catch (err) {
                console.error(`packml ${this.id}: ${name} failed:`, err);
                return { statusCode: StatusCodes.BadInternalError };
            }
        });
    }

    expect(which, wanted, then) {
        if (this.state(which) !== wanted || (which !== "base" && this.state("base") !== "Cleared")) {
            return StatusCodes.BadInvalidState;
        }
        then();
        return StatusCodes.Good;
    }

    // An acting state, then the state it completes to after ACT_MS.
    act(which, acting, next, then) {
        this.set(which, acting);
        clearTimeout(this.timer);
        this.timer = setTimeout(() => { this.timer = null; this.set(which, next); if (then) then(); }, ACT_MS);
    }

    start(args) {
        const params = args[0]?.value || [];
        const find = (id) => params.find((d) => d && d.ID === id);
        const jobId = String(find(JOB_PARAMETER)?.name ?? "");
        const durationS = Number(find(DURATION_PARAMETER)?.value ?? 0);
        const refuse = (why, status) => { this.log.append(this.id, jobId, "refused", why); return status; };
        if (this.refuseStart) return refuse("refuse-start", StatusCodes.BadUserAccessDenied);
        const where = [this.state("base"), this.state("machine"), this.state("execute")];
        if (where.join("/") !== "Cleared/Running/Idle") return refuse(`state ${where.join("/")}`, StatusCodes.BadInvalidState);
        if (!jobId) return refuse("no job id (descriptor 1)", StatusCodes.BadInvalidArgument);
        if (this.log.started.has(jobId)) return refuse("duplicate job id", StatusCodes.BadInvalidArgument);
        this.log.append(this.id, jobId, "started");
        this.parameter.setValueFromSource({ dataType: DataType.ExtensionObject, arrayType: VariantArrayType.Array, value: params });
        this.job = { id: jobId, remainingMs: (durationS / this.speed) * 1000, since: null, timer: null };
        this.act("execute", "Starting", "Execute", () => this.run());
        return StatusCodes.Good;
    }

    run() {
        const job = this.job;
        job.since = Date.now();
        job.timer = setTimeout(() => {
            job.timer = null;
            this.act("execute", "Completing", "Complete", () => {
                this.processed += 1;
                this.log.append(this.id, job.id, "ended");
                this.job = null;
                this.publishCounts();
            });
        }, job.remainingMs);
    }

    hold() {
        const job = this.job;
        if (job?.timer) {
            clearTimeout(job.timer);
            job.timer = null;
            job.remainingMs = Math.max(0, job.remainingMs - (Date.now() - job.since));
        }
        this.act("execute", "Holding", "Held");
    }

    unhold() { this.act("execute", "Unholding", "Execute", () => { if (this.job) this.run(); }); }

    // The running job, if any, stops for good.
    drop(why) {
        if (!this.job) return;
        clearTimeout(this.job.timer);
        if (ACTIVE.has(this.state("execute"))) this.log.append(this.id, this.job.id, "aborted", why);
        this.job = null;
    }

    abort() {
        if (["Aborting", "Aborted"].includes(this.state("base"))) return StatusCodes.BadInvalidState;
        this.drop("Abort");
        this.act("base", "Aborting", "Aborted");
        return StatusCodes.Good;
    }

    publishCounts() {
        const count = (n) => ({
            dataType: DataType.ExtensionObject, arrayType: VariantArrayType.Array,
            value: [this.addressSpace.constructExtensionObject(this.countType, { ID: 1, name: "parts", count: n, accCount: n })],
        });
        this.processedNode.setValueFromSource(count(this.processed));
        this.defectiveNode.setValueFromSource(count(0));
    }

    stop() {
        clearTimeout(this.timer);
        if (this.job) clearTimeout(this.job.timer);
    }
}

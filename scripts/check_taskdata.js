// Read a prescription's task data (<stem>.taskdata.zip) with isoxml-js, the
// dev4Agriculture ISOXML library many farm-software makers use, and print what it
// found as JSON: its warnings (missing attributes, broken references, grid files of the
// wrong size...) and each task's customer, farm, partfield, zones and grid.
// Exit status 1 when it warns.
//
//   npm install isoxml            # once, anywhere; then point NODE_PATH at node_modules
//   NODE_PATH=node_modules node scripts/check_taskdata.js field.taskdata.zip
const fs = require('fs')
const { ISOXMLManager } = require('isoxml')

async function main(path) {
    const manager = new ISOXMLManager()
    await manager.parseISOXMLFile(new Uint8Array(fs.readFileSync(path)), 'application/zip')
    const root = manager.rootElement.attributes
    const tasks = (root.Task || []).map(task => {
        const a = task.attributes
        const grid = (a.Grid || [])[0]
        return {
            designator: a.TaskDesignator,
            customer: a.CustomerIdRef && a.CustomerIdRef.entity.attributes.CustomerLastName,
            farm: a.FarmIdRef && a.FarmIdRef.entity.attributes.FarmDesignator,
            partfield: a.PartfieldIdRef && a.PartfieldIdRef.entity.attributes.PartfieldDesignator,
            zones: (a.TreatmentZone || []).length,
            grid: grid && {
                type: grid.attributes.GridType,
                rows: grid.attributes.GridMaximumRow,
                columns: grid.attributes.GridMaximumColumn,
                bytes: grid.binaryData ? grid.binaryData.length : null,
                zones: grid.getAllReferencedTZNCodes(),
            },
        }
    })
    const warnings = manager.getWarnings()
    console.log(JSON.stringify({ version: manager.options.version, warnings, tasks }))
    process.exit(warnings.length ? 1 : 0)
}

main(process.argv[2]).catch(error => {
    console.error(String(error))
    process.exit(2)
})
